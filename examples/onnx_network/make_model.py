"""Train a small PyTorch network on the breast-cancer CSV and export it to ONNX (not run by the tests).

    pip install torch onnx onnxscript scikit-learn
    python examples/onnx_network/make_model.py

Writes ``net.onnx`` (raw 30 features in, class probabilities out, dynamic batch) and
``reference.csv`` (PyTorch's own answers for every row of the data CSV, in file order:
``label,proba_benign,proba_malignant``), which ``mlpack build`` compares the ONNX graph
with. Both files are committed, so building the example needs no PyTorch.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "breast_cancer" / "breast_cancer.csv"
CLASSES = ["benign", "malignant"]  # sorted: the column order mlpack expects by default


class Net(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.body = nn.Sequential(nn.Linear(mean.size, 16), nn.ReLU(), nn.Linear(16, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.body((x - self.mean) / self.std), dim=1)


def main() -> None:
    torch.manual_seed(0)
    with DATA.open() as f:
        rows = list(csv.DictReader(f))
    names = [c for c in rows[0] if c != "diagnosis"]
    x = np.array([[float(r[c]) for c in names] for r in rows], dtype=np.float32)
    y = np.array([CLASSES.index(r["diagnosis"]) for r in rows])
    # Train only on the rows mlpack will not hold out for its gates: the same split as
    # mlpack's (20% held out, stratified, seed 0 = [model] seed, sorted indices).
    from sklearn.model_selection import train_test_split

    train, _ = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, shuffle=True, stratify=y)
    train = np.sort(train)
    net = Net(x[train].mean(axis=0), x[train].std(axis=0) + 1e-6)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.nll_loss(torch.log(net(xt[train]) + 1e-9), yt[train])
        loss.backward()
        opt.step()
    net.eval()
    torch.onnx.export(
        net,
        (xt[:1],),
        str(HERE / "net.onnx"),
        input_names=["features"],
        output_names=["probabilities"],
        dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    with torch.no_grad():
        proba = net(xt).numpy()
    with (HERE / "reference.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["label"] + [f"proba_{c}" for c in CLASSES])
        for p in proba:
            w.writerow([CLASSES[int(p.argmax())]] + [f"{v:.9g}" for v in p])
    print(f"wrote {HERE / 'net.onnx'} and reference.csv; training accuracy {(proba[train].argmax(1) == y[train]).mean():.4f}")


if __name__ == "__main__":
    main()
