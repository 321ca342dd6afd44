#!/usr/bin/env bash
# GPU benchmark of CERTIFY: the CIFAR-10 ResNet-18 (pyautoattack's model_test.pt, zoo:cifar10-resnet18)
# on real CIFAR-10 test images at n = 100,000 (Cohen et al.'s budget), against the transcription of the
# reference code in the same run. Cohen et al. report about 17 s per image for a ResNet-110 on 2019
# hardware. Usage: bash bench/certify_gpu.sh [POINTS] (from the repository root, venv active).
set -euo pipefail
POINTS="${1:-5}"
DATA="${ROBUSTLAB_SHARED_DATA:-../shared/data}/cifar10_test_1000.npz"
python bench/certify.py --model zoo:cifar10-resnet18 --data "npz:${DATA}" --device cuda \
    --n 100000 --n0 100 --sigma 0.25 --points "${POINTS}" --batch 1000 --our-batch 10000 --threads 4
python bench/certify.py --model zoo:cifar10-resnet18 --data "npz:${DATA}" --device cuda \
    --n 100000 --n0 100 --sigma 0.25 --points "${POINTS}" --batch 1000 --our-batch 1000 --threads 4
