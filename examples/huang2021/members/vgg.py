"""VGG-16 members, the surrogate of the paper's black-box attacks (Table 4), split into ``features`` and ``head``.

The convolutional part is torchvision's: ``make_layers(cfgs["D"], batch_norm=True)``, the 13
3x3 convolutions of VGG-16 with BatchNorm and ReLU and five 2x2 max-pools. Three adaptations
for the small images of these data sets:

- the first convolution takes ``in_channels`` (1 for grey Fashion-MNIST) instead of 3;
- the max-pools round up (``ceil_mode=True``), so a 28x28 input shrinks 14, 7, 4, 2, 1 instead
  of reaching 0 at the fifth pool; 32x32 inputs are unchanged (1x1 maps), 64x64 end at 2x2;
- a global average pool to ``[B, 8 * width]`` (512 units for ``width=64``) and one linear
  layer as the head, so PDD can act on the pooled post-ReLU features like for the ResNets.
  The authors' surrogate (``networks/ensemble_vgg.py`` of ALIS-Lab/AAAI2021-PDD) keeps
  ImageNet's head instead: a 7x7 adaptive pool and a 4096-4096 classifier with dropout.

``width`` scales every stage (64 is the real VGG-16; smaller widths are for tests).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers


class VGGMember(nn.Module):
    """One member: ``features`` maps ``[B, in_channels, H, W]`` to ``[B, 8 * width]``, ``head`` to ``[B, L]``.

    >>> import torch
    >>> member = VGGMember(in_channels=1, num_classes=10, width=4)
    >>> member.features(torch.zeros(2, 1, 28, 28)).shape, member(torch.zeros(2, 1, 28, 28)).shape
    (torch.Size([2, 32]), torch.Size([2, 10]))
    """

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        config = [entry if entry == "M" else int(entry) * width // 64 for entry in cfgs["D"]]
        layers = make_layers(config, batch_norm=True)
        first = layers[0]
        layers[0] = nn.Conv2d(in_channels, first.out_channels, kernel_size=3, padding=1)
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_size = config[-2]
        self.head = nn.Linear(self.feature_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
