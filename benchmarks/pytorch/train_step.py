"""The training step of millrace's benchmark MLP in plain PyTorch, on the CPU, as the side-by-side
reference for `ml/benches/train_step.rs`: the same model (24 -> 64 -> 64 -> 2, ReLU), the same
optimiser (Adam, lr 1e-3), the same loss (softmax cross-entropy, mean over the batch), the same
inputs (uniform in [-1, 1], label = first feature > 0) and the same batches (512 and 8,192 rows),
on 1 and 2 threads. Prints one JSON line.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r benchmarks/pytorch/requirements.txt
    .venv-torch/bin/python benchmarks/pytorch/train_step.py [--with-millrace]

`--with-millrace` first runs `cargo bench -p millrace-ml --bench train_step` (one thread, its
dense and burn paths) and puts both in the same line, with the ratios at each batch size, so
that the two are measured in one run on one machine.
"""

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

DIM = 24
# Forward and backward's two products per layer, 2 FLOP per multiply-add (as the Rust bench).
FLOP_PER_ROW = 6.0 * (24 * 64 + 64 * 64 + 64 * 2)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(DIM, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 2),
    )


def rate(batch: int, threads: int) -> float:
    """Rows per second of forward + backward + Adam at `batch` rows on `threads` threads."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, DIM, generator=generator) * 2.0 - 1.0
    y = (x[:, 0] > 0).long()
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(20):
        step()
    # About two million rows, whatever the batch (as the Rust bench).
    steps = max(2_000_000 // batch, 50)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def millrace_steps() -> list:
    """The Rust bench's JSON line (its `steps`: batch, path, rows_per_s, gflop_per_s)."""
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "millrace-ml", "--bench", "train_step"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--with-millrace", action="store_true")
    args = parser.parse_args()
    torch.set_num_interop_threads(1)
    line = {
        "bench": "pytorch_train_step",
        "torch": torch.__version__,
        "model": "mlp 24-64-64-2 relu adam, cross-entropy",
        "flop_per_row": FLOP_PER_ROW,
        "steps": [],
    }
    for batch in (512, 8192):
        for threads in (1, 2):
            rows = rate(batch, threads)
            line["steps"].append(
                {
                    "batch": batch,
                    "threads": threads,
                    "rows_per_s": round(rows),
                    "gflop_per_s": round(rows * FLOP_PER_ROW / 1e9, 2),
                }
            )
    if args.with_millrace:
        ours = millrace_steps()
        line["millrace"] = ours
        dense = {s["batch"]: s["rows_per_s"] for s in ours if s["path"] == "dense"}
        one_thread = {s["batch"]: s["rows_per_s"] for s in line["steps"] if s["threads"] == 1}
        line["millrace_dense_over_pytorch_1_thread"] = {
            str(b): round(dense[b] / one_thread[b], 3) for b in dense if b in one_thread
        }
    print(json.dumps(line))


if __name__ == "__main__":
    sys.exit(main())
