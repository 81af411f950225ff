"""The command line every entry point shares: ``--config_file FILE`` plus ``KEY VALUE ...`` config overrides.

    from utils.cli import ConfigArgumentParser

    parser = ConfigArgumentParser("What the script does.")
    parser.add_argument("--resume", action="store_true")      # the script's own options
    args = parser.parse_args(argv)                            # args.config_file, args.opts, args.resume
    cfg = load_cfg(args.config_file, args.opts)

``train_net.py``, ``test_net.py``, ``tools/*.py`` and ``benchmarks/*.py`` build their parsers with it, so
the two arguments are spelled, defaulted and documented once. This module imports nothing heavy (no torch),
so light tools can use it.
"""
import argparse
import contextlib
import copy
import sys
from typing import Iterator, List, Optional, Sequence

CONFIG_HELP = "YAML config (see configs/)"
OPTS_HELP = "config overrides, e.g. SOLVER.MAX_EPOCHS 10 OUTPUT_DIR ./output/run1"


class ConfigArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``--config_file FILE`` and the trailing ``KEY VALUE ...`` overrides.

    Args:
        description: the script's help text (further keyword arguments go to ``ArgumentParser``).
        config_default: the default of ``--config_file`` ('' = the repository defaults).
        config_help: its help text.
        config_file: False leaves ``--config_file`` out (a script whose runs each have their own file)
            and keeps only the overrides.

    ``parse_args`` also accepts the script's own options after the overrides (``train_net.py --config_file F
    SOLVER.MAX_EPOCHS 1 --resume``), required ones included (``tools/extract_features.py --config_file F
    TEST.WEIGHT W --out f.npz``): argparse's REMAINDER would put them into ``opts``; they are parsed as
    options instead.
    """

    def __init__(self, description: Optional[str] = None, *, config_default: str = "",
                 config_help: str = CONFIG_HELP, config_file: bool = True, opts_help: str = OPTS_HELP, **kwargs):
        super().__init__(description=description, **kwargs)
        if config_file:
            self.add_argument("--config_file", default=config_default, metavar="FILE", help=config_help)
        self.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help=opts_help)

    def parse_args(self, args: Optional[Sequence[str]] = None,
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        return self._parse_with_late_options(argv, namespace)

    def _parse_with_late_options(self, argv: List[str], namespace: Optional[argparse.Namespace]
                                 ) -> argparse.Namespace:
        """Parse ``argv`` with the options found among the overrides moved in front of them.

        A first pass, with no option required, finds ``opts``: the tail of ``argv`` (REMAINDER takes
        everything after the first KEY), so a required option given only after the overrides is not
        reported missing. The arguments before it plus the late options are then parsed as a whole, so
        required, repeated and mutually exclusive options behave as if the late ones had come first.
        """
        with self._nothing_required():
            first = super().parse_args(argv, copy.copy(namespace))
        opts = list(first.opts)
        late = next((i for i, token in enumerate(opts) if token.startswith("--")), None)
        if late is None or argv[len(argv) - len(opts):] != opts:
            return super().parse_args(argv, namespace)
        head = argv[:len(argv) - len(opts)]
        again = self._parse_with_late_options(head + opts[late:], namespace)
        again.opts = opts[:late] + list(again.opts)
        return again

    @contextlib.contextmanager
    def _nothing_required(self) -> Iterator[None]:
        """Required options and required mutually exclusive groups made optional for the duration."""
        required = [a for a in self._actions if a.required and a.option_strings]
        groups = [g for g in self._mutually_exclusive_groups if g.required]
        for item in required + groups:
            item.required = False
        try:
            yield
        finally:
            for item in required + groups:
                item.required = True
