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
import sys
from typing import List, Optional, Sequence

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
    SOLVER.MAX_EPOCHS 1 --resume``): argparse's REMAINDER would put them into ``opts``; they are parsed as
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
        parsed = super().parse_args(argv, namespace)
        return self._options_after_overrides(argv, parsed, namespace)

    def _options_after_overrides(self, argv: List[str], parsed: argparse.Namespace,
                                 namespace: Optional[argparse.Namespace]) -> argparse.Namespace:
        """Parse again with the options found among the overrides moved in front of them.

        ``opts`` is the tail of ``argv`` (REMAINDER takes everything after the first KEY); the arguments
        before it plus the late options are parsed as a whole, so required, repeated and mutually
        exclusive options behave as if the late ones had come first.
        """
        opts = list(parsed.opts)
        late = next((i for i, token in enumerate(opts) if token.startswith("--")), None)
        if late is None or not opts or argv[len(argv) - len(opts):] != opts:
            return parsed
        head = argv[:len(argv) - len(opts)]
        again = self.parse_args(head + opts[late:], namespace)
        again.opts = opts[:late] + list(again.opts)
        return again
