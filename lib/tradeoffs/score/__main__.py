"""`python -m tradeoffs.score MODEL [--top1 X] [--weights PATH --arch NAME] [--profile smoke|default]`: score one
model (`tradeoffs.score`), print its scorecard, store its results file, and optionally write its trials in
model-vs-human's raw-data format and the scorecard's figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import models, results
from ..chapters import score_model as page
from ..errors import TradeoffsError
from . import REFERENCE, SCORE_PROFILES, result_name, score, trials, write_mvh_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradeoffs.score", description=__doc__)
    parser.add_argument("model", nargs="?", help="an offline model, a timm name, or the name of --weights")
    parser.add_argument("--profile", default=REFERENCE, help=f"one of {', '.join(SCORE_PROFILES)}")
    parser.add_argument("--top1", type=float, help="ImageNet top-1 (%%) when timm's table does not know the model")
    parser.add_argument("--weights", help="a local checkpoint (state_dict: .pth, .pt or .safetensors)")
    parser.add_argument("--arch", help="the checkpoint's timm architecture (default: MODEL)")
    parser.add_argument("--input-size", type=int, help="input side in pixels (default: the model's own)")
    parser.add_argument("--bapps", help="a folder with BAPPS's 2afc/val (adds the BAPPS 2AFC score)")
    parser.add_argument("--mvh", help="a folder of model-vs-human model files (*_session-1.csv) to rank among")
    parser.add_argument("--csv", help="write the model's trials here in model-vs-human's raw-data format")
    parser.add_argument("--figures", help="write the scorecard figures here (PNG)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--list", action="store_true", help="list the offline models and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            print(models.available()[["name", "family", "top1", "top1_dataset", "weights_available_offline"]]
                  .to_string(index=False))
            return 0
        if not args.model:
            raise TradeoffsError("name a model to score (python -m tradeoffs.score --list shows the offline ones).")
        ds = score(args.model, profile=args.profile, weights=args.weights, arch=args.arch, top1=args.top1,
                   input_size=args.input_size, bapps=args.bapps, mvh=args.mvh, device=args.device)
        print(page.card_text(ds), page.card_table(ds).to_string(), page.not_measured_text(ds), sep="\n\n")
        print(f"\nstored {results.results_dir() / (result_name(args.model, args.profile) + '.nc')}")
        if args.csv:
            for path in write_mvh_csv(trials(ds), args.csv):
                print(f"wrote {path}")
        if args.figures:
            page.write_figures(ds, Path(args.figures), result_name(args.model, args.profile))
    except TradeoffsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
