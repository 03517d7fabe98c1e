"""Train the SmolLM2 base and its embedders (resumable), then ship the small trained parts.

    python scripts/train_smollm2_default.py run --data data/shapes --out runs/smollm2
    python scripts/train_smollm2_default.py run --data data/shapes --out runs/smollm2 --quick   # seconds per stage
    python scripts/train_smollm2_default.py ship --out runs/smollm2      # -> src/vladva/pretrained/smollm2/

`run` executes stages heal, align, instruct (the base LVLM), vladva (the VladVA fine-tune) and dual
(the dual-encoder baseline on the same pairs); a finished stage is reused, an interrupted one
(kill -9 included) resumes from its last checkpoint: rerun the same command. Budgets per stage:
`--heal-steps N --heal-minutes M` (likewise align, instruct), `--vladva-steps N` (the dual encoder
follows VladVA's steps and batch). Anything else: `key=value` overrides of
vladva.toyworld.base.smollm2.config.Smollm2RecipeConfig (e.g. `layers=4 heal.batch_size=8`).
"""

from __future__ import annotations

import argparse
import json
import sys


def _budget_overrides(args) -> list[str]:
    out = []
    for stage in ("heal", "align", "instruct"):
        steps, minutes = getattr(args, f"{stage}_steps"), getattr(args, f"{stage}_minutes")
        if steps is not None:
            out.append(f"{stage}.steps={steps}")
        if minutes is not None:
            out.append(f"{stage}.max_seconds={60 * minutes}")
    if args.threads is not None:
        out.append(f"threads={args.threads}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the recipe")
    run.add_argument("--data", required=True, help="folder with train.jsonl and val.jsonl (vladva data shapes)")
    run.add_argument("--out", required=True, help="output folder (stages are resumed from it)")
    run.add_argument("--config", help="YAML recipe on top of the packaged pretrain_smollm2.yaml")
    run.add_argument("--quick", action="store_true", help="smoke-test sizes: seconds per stage")
    run.add_argument("--threads", type=int, help="CPU threads for torch (default 1)")
    for stage in ("heal", "align", "instruct"):
        run.add_argument(f"--{stage}-steps", type=int, help=f"{stage}: optimizer steps")
        run.add_argument(f"--{stage}-minutes", type=float, help=f"{stage}: wall-clock cap")
    run.add_argument("--vladva-steps", type=int, help="VladVA (and dual encoder) optimizer steps")
    run.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    ship = sub.add_parser("ship", help="copy the small trained parts into src/vladva/pretrained/smollm2/")
    ship.add_argument("--out", required=True, help="the run's output folder")
    ship.add_argument("--dest", help="destination (default: the package's pretrained/smollm2/)")
    args = parser.parse_args(argv)

    from vladva.toyworld.base.smollm2 import load_smollm2_config, run_smollm2, ship_smollm2

    if args.command == "ship":
        sizes = ship_smollm2(args.out, args.dest)
        for name, size in sizes.items():
            print(f"{size / 1e6:8.2f} MB  {name}")
        print(f"{sum(sizes.values()) / 1e6:8.2f} MB  in all")
        return 0
    cfg = load_smollm2_config(args.config, _budget_overrides(args) + list(args.overrides), quick=args.quick)
    if args.vladva_steps is not None:
        cfg.vladva_overrides.append(f"optim.max_steps={args.vladva_steps}")
    report = run_smollm2(args.data, args.out, cfg)
    summary = {k: v.get("compute") for k, v in report.items() if isinstance(v, dict) and "compute" in v}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
