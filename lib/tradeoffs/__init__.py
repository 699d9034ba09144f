"""Testing published claims about ImageNet accuracy, perceptual similarity, transfer and human alignment."""

import os

# PyTorch places CPU tensors of 2 MB and more in transparent huge pages when this is set before its first allocation
# (Linux; ignored elsewhere). A fresh 24 MB features array then costs no page faults on first write: ResNet-18
# extraction at 64 px went from 0.93x to 1.0x a plain forward pass (`python -m tradeoffs.bench --quick`). It speeds
# the plain forward pass more than extraction for ResNet-50 at 224 px (0.80x with it, 1.02x without; both faster in
# absolute terms): see the performance page. Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
