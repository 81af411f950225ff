"""Disk hygiene for the suite: its tests train and save real (tiny) models, a checkpoint with its optimizer
state is ~200 MB, and the whole suite writes ~10 GB. pytest.ini removes each passing test's ``tmp_path``; the
fixture below removes what a module's own fixtures wrote (``tmp_path_factory.mktemp``) once the module is done
with no failure. A failure keeps everything its module wrote, for a look afterwards."""
import shutil

import pytest


@pytest.fixture(scope="module", autouse=True)
def remove_module_temp_dirs(request, tmp_path_factory):
    """Set up before the module's other fixtures, so torn down after them: what is new under the base temp
    folder when the module ends is removed, unless a test failed meanwhile or pytest.ini keeps everything."""
    if request.config.getini("tmp_path_retention_policy") != "failed":
        yield
        return
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failures_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failures_before:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)
