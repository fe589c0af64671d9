"""Fixtures for `trainer import` (issue 21): the seed notebook's PyTorch VRAE (the architecture
of bench/vrae_torch.py), trained briefly on ECG5000, its encoder (RNN + `hidden_to_mean`) exported
to ONNX with `torch.onnx.export`, and PyTorch's latents for the first 200 ECG5000 TEST beats, so
CI can check an imported model without PyTorch.

Writes trainer/tests/fixtures/torch/{NAME}.onnx and {NAME}_latents.csv for
lstm90 (LSTM, 1 layer, hidden 90), gru90 (GRU, 1 layer, hidden 90) and gru32x2 (GRU, 2 layers,
hidden 32); latent 20 throughout. Seeded; the files are committed, rerun only to change them.

usage: PYTHONPATH=target/torch python3 bench/export_torch_encoder.py [EPOCHS]
(bench/compare-train.sh installs torch into target/torch.)
"""
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vrae_torch import Vrae, load_ecg5000, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "trainer" / "tests" / "fixtures" / "torch"


class Encoder(nn.Module):
    """What a device runs: the last layer's final hidden state through `hidden_to_mean`."""

    def __init__(self, vrae):
        super().__init__()
        self.cell, self.rnn, self.head = vrae.cell, vrae.encoder, vrae.hidden_to_mean

    def forward(self, x):  # x: [T, B, F]
        _, state = self.rnn(x)
        h_end = (state[0] if self.cell == "lstm" else state)[-1]
        return self.head(h_end)


def train(cell, depth, hidden, data, epochs):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Vrae(cell, hidden=hidden, depth=depth)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    mse = nn.MSELoss(reduction="sum")
    for _ in range(epochs):
        order = rng.permutation(len(data))
        for i in range(0, len(data), 32):
            train_step(model, opt, mse, torch.from_numpy(data[order[i:i + 32]].T.copy()).unsqueeze(-1))
    return model.eval()


def test_beats(n):
    with gzip.open(ROOT / "data" / "ecg5000" / "ECG5000_TEST.tsv.gz", "rt") as f:
        rows = [list(map(float, line.split("\t")[1:])) for line in f if line.strip()][:n]
    return np.asarray(rows, dtype=np.float32)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    data = load_ecg5000()
    beats = test_beats(200)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, cell, depth, hidden in [("lstm90", "lstm", 1, 90), ("gru90", "gru", 1, 90), ("gru32x2", "gru", 2, 32)]:
        enc = Encoder(train(cell, depth, hidden, data, epochs)).eval()
        x = torch.from_numpy(beats.T.copy()).unsqueeze(-1)  # [140, 200, 1]
        with torch.no_grad():
            z = enc(x).numpy()
        torch.onnx.export(
            enc,
            (x[:, :2],),
            str(OUT / f"{name}.onnx"),
            opset_version=17,
            input_names=["x"],
            output_names=["latent"],
            dynamic_axes={"x": {0: "seq_len", 1: "batch"}, "latent": {0: "batch"}},
            dynamo=False,
        )
        np.savetxt(OUT / f"{name}_latents.csv", z, delimiter=",", fmt="%.9g",
                   header=f"PyTorch {torch.__version__} latents of the first 200 ECG5000 TEST beats ({cell}, {depth} layer(s), hidden {hidden}, {epochs} epochs)")
        print(f"{name}: {(OUT / f'{name}.onnx').stat().st_size} bytes, latents {z.shape}")


if __name__ == "__main__":
    main()
