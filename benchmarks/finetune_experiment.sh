#!/usr/bin/env bash
# usage: run.sh NAME [overrides...]
set -e
name=$1; shift
B=src/vladva/pretrained/base-lvlm
rm -rf runs/exp/$name
.venv/bin/vladva train --config src/vladva/configs/default.yaml base_model=$B data.train=runs/demo/data/train.jsonl data.val=runs/demo/data/val.jsonl output_dir=runs/exp/$name progress=false eval.every=0 "$@" > runs/exp/$name.train.log 2>&1
grep "held-out" runs/exp/$name.train.log
.venv/bin/vladva eval -m $name=vladva:$B:runs/exp/$name --data runs/demo/data --suite retrieval,sugarcrepe,sugarcrepe_pp --out runs/exp/$name-eval --cache-dir runs/exp/cache > runs/exp/$name.eval.log 2>&1
python3 -c "
import json;r=json.load(open('runs/exp/$name-eval/results.json'))['models'][0]['metrics']
print('$name', 't2i', r['retrieval']['t2i_R@1'], 'i2t', r['retrieval']['i2t_R@1'], {k: v for k, v in r['sugarcrepe'].items()}, 'TOT', r['sugarcrepe_pp'].get('mean_TOT', r['sugarcrepe_pp']))"
