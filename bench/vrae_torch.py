"""PyTorch reference for the training-speed comparison (issue 6): the seed notebook's VRAE
(LSTM or GRU encoder/decoder, hidden 90, depth 1, latent 20, dropout 0.2), its loss scaling
(MSE summed over batch x time x features + KL mean over batch x latent), Adam lr 5e-4, gradient
norm clipped at 5, batch 32, on the same 4500 ECG5000 training series (90/10 split of all rows).

Prints seconds per epoch and ms per batch (median of EPOCHS epochs) for 1 and 2 threads, and the
same `csv,...` lines as `cargo bench -p trainer --bench train_epoch`.

usage: python3 bench/vrae_torch.py [EPOCHS [lstm|gru]... [1|2]...]  (default: all cells and thread counts)
"""
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


def load_ecg5000():
    rows = []
    for part in ("TRAIN", "TEST"):
        with gzip.open(ROOT / "data" / "ecg5000" / f"ECG5000_{part}.tsv.gz", "rt") as f:
            rows += [list(map(float, line.split("\t")[1:])) for line in f if line.strip()]
    x = np.asarray(rows, dtype=np.float32)
    idx = np.random.default_rng(0).permutation(len(x))
    return x[idx[round(0.1 * len(x)):]]  # 4500 training series


class Vrae(nn.Module):
    def __init__(self, cell, features=1, hidden=90, depth=1, latent=20, dropout=0.2):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.cell, self.depth = cell, depth
        self.encoder = rnn(features, hidden, depth, dropout=dropout if depth > 1 else 0.0)
        self.hidden_to_mean = nn.Linear(hidden, latent)
        self.hidden_to_logvar = nn.Linear(hidden, latent)
        self.latent_to_hidden = nn.Linear(latent, hidden)
        self.decoder = rnn(1, hidden, depth)
        self.hidden_to_output = nn.Linear(hidden, features)
        for lin in (self.hidden_to_mean, self.hidden_to_logvar, self.latent_to_hidden, self.hidden_to_output):
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, x):  # x: [T, B, F]
        _, state = self.encoder(x)
        h_end = (state[0] if self.cell == "lstm" else state)[-1]
        mean, logvar = self.hidden_to_mean(h_end), self.hidden_to_logvar(h_end)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        h0 = self.latent_to_hidden(z).unsqueeze(0).repeat(self.depth, 1, 1)
        zeros_in = torch.zeros(x.shape[0], x.shape[1], 1)
        state0 = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        out, _ = self.decoder(zeros_in, state0)
        return self.hidden_to_output(out), mean, logvar


def train_step(model, opt, mse, x):
    """One optimiser step of the seed's loss: summed MSE + mean KL, gradient norm clipped at 5."""
    recon, mean, logvar = model(x)
    kl = -0.5 * torch.mean(1 + logvar - mean.pow(2) - logvar.exp())
    loss = mse(recon, x) + kl
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()


def epoch_seconds(cell, data, threads, epochs):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Vrae(cell)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    mse = nn.MSELoss(reduction="sum")
    times = []
    for _ in range(epochs):
        order = np.random.permutation(len(data))
        start = time.perf_counter()
        for i in range(0, len(data), 32):
            x = torch.from_numpy(data[order[i:i + 32]].T.copy()).unsqueeze(-1)  # [T, B, 1]
            train_step(model, opt, mse, x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    cells = [a for a in sys.argv[2:] if a in ("lstm", "gru")] or ["lstm", "gru"]
    thread_counts = [int(a) for a in sys.argv[2:] if a.isdigit()] or [1, 2]
    data = load_ecg5000()
    batches = -(-len(data) // 32)
    print(f"PyTorch {torch.__version__}: {len(data)} series, {batches} batches, median of {epochs} epochs")
    print(f"{'cell':<5} {'threads':>7} {'s/epoch':>11} {'ms/batch':>11}")
    for cell in cells:
        for threads in thread_counts:
            s = epoch_seconds(cell, data, threads, epochs)
            print(f"{cell:<5} {threads:>7} {s:>11.2f} {s * 1000 / batches:>11.1f}")
            print(f"csv,torch,{cell},{threads},{s:.4f},{s * 1000 / batches:.3f}")


if __name__ == "__main__":
    main()
