#!/usr/bin/env bash
# VladVA fine-tuning recipes side by side on the shapes data, on one GPU: each recipe trains in its
# own process (the embedded default is tiny, so several share the GPU), then is evaluated on
# retrieval, SugarCrepe and SugarCrepe++. One line of results per recipe in $OUT/sweep.jsonl.
#
#   OUT=runs/sweep STEPS=1500 bash benchmarks/gpu_finetune_sweep.sh            # GPU machine
#   OUT=runs/sweep STEPS=4 QUICK=1 bash benchmarks/gpu_finetune_sweep.sh        # CPU smoke run
#
# Needs only the python3 that holds torch/transformers/peft/accelerate (no install): it runs
# vladva from src/ with `python3 -m vladva`.
set -u
OUT=${OUT:-runs/sweep}; STEPS=${STEPS:-1500}; WORLD=${WORLD:-default}; QUICK=${QUICK:-0}; TRAIN_CAP_S=${TRAIN_CAP_S:-330}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
V="python3 -m vladva"
B=src/vladva/pretrained/base-lvlm
DATA=$OUT/data
mkdir -p $OUT
if [ "$QUICK" = 1 ]; then
  $V data shapes --out $DATA --world $WORLD --quiet --n-train 256 --n-val 32 --n-test 40 || exit 1
  EVAL_LIMIT="--limit 40"
else
  $V data shapes --out $DATA --world $WORLD --quiet || exit 1
  EVAL_LIMIT=""
fi

recipe() {  # NAME overrides...
  local name=$1; shift
  local run=$OUT/$name
  rm -rf $run
  timeout $TRAIN_CAP_S $V train --config src/vladva/configs/default.yaml base_model=$B \
    data.train=$DATA/train.jsonl data.val=$DATA/val.jsonl output_dir=$run progress=false \
    eval.every=0 eval.at_start=false checkpoint.every=250 optim.max_steps=$STEPS "$@" > $OUT/$name.train.log 2>&1
  echo "train rc=$? $name" >> $OUT/$name.train.log
  $V eval -m $name=vladva:$B:$run --data $DATA --suite retrieval,sugarcrepe,sugarcrepe_pp $EVAL_LIMIT --no-cache \
    --out $OUT/$name-eval > $OUT/$name.eval.log 2>&1 || { echo "eval failed: $name"; return; }
  python3 - "$OUT" "$name" "$*" <<'PY'
import json, pathlib, re, sys
out, name, overrides = sys.argv[1:]
m = json.load(open(f"{out}/{name}-eval/results.json"))["models"][0]["metrics"]
log = pathlib.Path(f"{out}/{name}.train.log").read_text()
steps = re.findall(r"trained (\d+) steps in ([\d.]+) s", log)
metrics = [json.loads(x) for x in pathlib.Path(f"{out}/{name}/metrics.jsonl").read_text().splitlines() if x.strip()]
curve = {str(r["step"]): [round(r.get(k, -1), 3) for k in ("contrastive", "batch_acc", "hard_neg_acc")]
         for r in metrics if r["step"] in (1, 100, 250, 500, 1000, 1500) or r is metrics[-1]}
row = {"name": name, "overrides": overrides, "trained": steps[-1] if steps else "cut by TRAIN_CAP_S",
       "curve (contrastive, batch_acc, hard_neg_acc)": curve,
       "t2i_R@1": m["retrieval"]["t2i_R@1"], "i2t_R@1": m["retrieval"]["i2t_R@1"], "sugarcrepe": m["sugarcrepe"],
       "sugarcrepe_pp_TOT": {k: v["TOT"] for k, v in m["sugarcrepe_pp"].items()},
       "sugarcrepe_pp_ITT": {k: v["ITT"] for k, v in m["sugarcrepe_pp"].items()}}
with open(f"{out}/sweep.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
}

nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
RECIPES=${RECIPES:-caption_negatives}
if [ "$RECIPES" = first ]; then  # the first sweep (record-level negatives only: data.hard_negatives drew them)
  recipe default &
  recipe hardneg data.hard_negatives=2 &
  recipe hardneg_contrastive_only data.hard_negatives=2 loss.ntp_weight=0 &
  recipe hardneg_projector data.hard_negatives=2 model.train_projector=true optim.lr_projector=1e-3 optim.lr_lora=1e-3 &
  recipe hardneg_r64 data.hard_negatives=2 model.lora.r=64 model.lora.alpha=64 &
  recipe hardneg_bigbatch data.hard_negatives=2 data.contrastive_batch_size=128 &
else  # minimal-edit negatives of each drawn caption (manifest key caption_negatives)
  recipe capneg data.hard_negatives=2 &
  recipe capneg_lr2e-3 data.hard_negatives=2 optim.lr_lora=2e-3 optim.lr_soft_prompt=2e-3 &
  recipe capneg_r64_lr1e-3 data.hard_negatives=2 model.lora.r=64 model.lora.alpha=64 optim.lr_lora=1e-3 &
  recipe capneg_contrastive_only_lr1e-3 data.hard_negatives=2 loss.ntp_weight=0 optim.lr_lora=1e-3 &
  recipe capneg_projector_lr1e-3 data.hard_negatives=2 model.train_projector=true optim.lr_projector=1e-3 optim.lr_lora=1e-3 &
  recipe capneg_k4_lr1e-3 data.hard_negatives=4 optim.lr_lora=1e-3 &
fi
wait
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
echo "sweep done: $OUT/sweep.jsonl"
