"""Run an example app on a temporary embedded database; it ends by itself and says what
each stage did.

    python examples/run.py sensors      # trainer → predictor → alerts (~10 s)
    python examples/run.py clusters     # k-means on 3 Gaussian clusters in 3-D (~8 s)

The same as ``streamlog up examples/NAME/app.toml --url sqlite:///… --until-idle 2``,
followed by the example's report. ``--url`` runs it on a database of your own instead
(use an empty one: the report reads whole streams).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from streamlog.apps import Runner, load_app  # noqa: E402 - after the sys.path line that makes the checkout importable
from streamlog.apps.status import text_table  # noqa: E402 - after the sys.path line that makes the checkout importable

MODULES = {"sensors": "sensors.py", "clusters": "clusters.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=sorted(MODULES))
    parser.add_argument("--url", help="database URL (default: a new file in a temporary directory)")
    parser.add_argument("--idle", type=float, default=2.0, help="stop once idle this long (seconds)")
    args = parser.parse_args()
    app = load_app(HERE / args.app / "app.toml")
    with tempfile.TemporaryDirectory(prefix="streamlog-example-") as tmp:
        url = args.url or f"sqlite:///{tmp}/{args.app}.db"
        started = time.monotonic()
        runner = Runner(app, url=url, until_idle=args.idle, status_every=0, live=False)
        code = runner.run()
        print(f"\n{args.app}: {len(app.stages)} stages ran for {time.monotonic() - started:.1f} s "
              f"({runner.failure or 'stopped once idle'})")
        print(text_table(runner.rows()))
        if code == 0:
            spec = importlib.util.spec_from_file_location(args.app, HERE / args.app / MODULES[args.app])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            print("\n" + "\n".join(module.report(url)))
    return code


if __name__ == "__main__":
    sys.exit(main())
