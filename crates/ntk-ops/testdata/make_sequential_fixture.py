"""Writes sequential_resnet.safetensors: a small PyTorch CNN (conv, BatchNorm2d,
residual block, max/avg pooling, LayerNorm, Linear) in eval mode, f64, with its
full state_dict, an input batch `x` and the outputs `y`; the metadata lists the
named_parameters() and buffer keys in order. Mirrors `small_resnet()` in
crates/ntk-ops/src/sequential.rs.

    target/anchors-venv/bin/python make_sequential_fixture.py
"""
import torch
from torch import nn
from safetensors.torch import save_file


class Residual(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.body(x)


torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
net = nn.Sequential(
    nn.Conv2d(2, 4, 3, padding=1),
    nn.BatchNorm2d(4),
    nn.ReLU(),
    Residual(
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
    ),
    nn.MaxPool2d(2),
    nn.Conv2d(4, 3, 3, padding=1),
    nn.LayerNorm([3, 4, 4]),
    nn.Tanh(),
    nn.AvgPool2d(2),
    nn.Flatten(),
    nn.Linear(12, 3),
)
with torch.no_grad():
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.3)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 1.5)
net.eval()
x = torch.randn(3, 2 * 8 * 8)
with torch.no_grad():
    y = net(x.reshape(3, 2, 8, 8))
tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
tensors["x"] = x
tensors["y"] = y
buffers = [k for k, _ in net.named_buffers() if not k.endswith("num_batches_tracked")]
meta = {
    "named_parameters": ",".join(k for k, _ in net.named_parameters()),
    "buffers": ",".join(buffers),
    "state_dict": ",".join(net.state_dict().keys()),
}
save_file(tensors, "sequential_resnet.safetensors", metadata=meta)
print(meta["named_parameters"])
