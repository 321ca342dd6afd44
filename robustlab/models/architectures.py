"""Architectures robustlab builds by name (``zoo:`` models and saved robustlab checkpoints).

Only architectures defined here, in torchvision or in timm can be named inside a model file's
metadata: loading a file never imports code that the file names.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digit images (scikit-learn's ``load_digits``).

    Shapes: (N, 1, 8, 8) -> logits (N, 10); penultimate features: input of ``fc2`` (N, 128).
    """

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):  # type: ignore[no-untyped-def]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR variant of ResNet (3x3 stem, no max-pool), as used by most robustness papers.

    Parameter names match the ``model_test.pt`` checkpoint shipped with ``pyautoattack``.
    Shapes: (N, 3, 32, 32) -> (N, num_classes); penultimate features: input of ``linear`` (N, 512).
    """

    def __init__(self, blocks: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers = []
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if i == 0 else 2
            mods = []
            for j in range(n):
                mods.append(_BasicBlock(cin, width, stride if j == 0 else 1))
                cin = width
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "digits-cnn": DigitsCNN,
    "cifar-resnet18": lambda num_classes=10: CifarResNet((2, 2, 2, 2), num_classes),
    "cifar-resnet34": lambda num_classes=10: CifarResNet((3, 4, 6, 3), num_classes),
}
