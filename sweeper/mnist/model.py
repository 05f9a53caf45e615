"""Two small CNN families for 28x28 MNIST. `width` scales every conv; `dropout` follows every block.

    reference  the seed's shape: 3x3 conv-BN-ReLU-dropout blocks, maxpool + 1x1 transition, GAP, FC (~8.8k at width 10)
    slim       deeper and narrower: a 1x1 transition after each stage (~8.8k at width 16)
    lean       slim without the FC after GAP: its last 3x3 conv gives the 10 class maps (~4.7k at width 12)
"""
from torch import nn


def block(cin, cout, dropout, padding=0):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Dropout(dropout),
    )


def transition(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def head(cin):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def reference(width, dropout):
    w, d = width, dropout
    return nn.Sequential(
        block(1, w, d),           # 28 -> 26
        block(w, 2 * w, d),       # 26 -> 24
        nn.MaxPool2d(2),          # 24 -> 12
        transition(2 * w, w),
        block(w, w, d),           # 12 -> 10
        block(w, 2 * w, d),       # 10 -> 8
        block(2 * w, 2 * w, d),   # 8 -> 6
        head(2 * w),
    )


def slim_trunk(w, d):
    h = max(1, w // 2)
    return [
        block(1, h, d),           # 28 -> 26
        block(h, w, d),           # 26 -> 24
        nn.MaxPool2d(2),          # 24 -> 12
        transition(w, h),
        block(h, w, d),           # 12 -> 10
        block(w, w, d),           # 10 -> 8
        transition(w, h),
        block(h, w, d, padding=1),  # 8 -> 8
    ]


def slim(width, dropout):
    return nn.Sequential(*slim_trunk(width, dropout), block(width, width, dropout), head(width))  # 8 -> 6


def lean(width, dropout):
    """slim's trunk, but the last block and the FC become one 3x3 conv to 10 maps, averaged: 360 fewer params at
    width 12 (slim 5,020 -> 4,660), 507 at width 13."""
    return nn.Sequential(
        *slim_trunk(width, dropout),
        nn.Conv2d(width, 10, 3),  # 8 -> 6: class maps, no BN or ReLU before the average
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count(model_cfg):
    """Parameters of the model a config describes, built on the meta device: shapes only, no weights, so a
    model far over budget is counted in milliseconds (width=5000: 2.1 G params, 29 s and 8.4 GB when allocated)."""
    import torch
    from hydra.utils import instantiate
    with torch.device("meta"):
        return count_params(instantiate(model_cfg))
