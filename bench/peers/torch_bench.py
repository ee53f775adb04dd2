#!/usr/bin/env python3
"""PyTorch (CPU) peer benchmark for difflow's reference configurations.

  python3 bench/peers/torch_bench.py --preset toy-mlp|fmnist-unet-s|fmnist-dit-s [--threads N|best]
         [--steps K] [--warmup W] [--sample] [--sample-batch B] [--json]

Training mode: K timed Adam steps of the flow matching loss (after W untimed warmup steps) on
random data of the preset's shape (toy-mlp: two moons; fmnist-unet-s, fmnist-dit-s: uniform
images in [-1,1]).
Sampling mode (--sample): K timed runs (after W warmup runs) of a Heun PF-ODE sampler with
18 uniform steps in t from 1 to 0, Euler on the last step (35 NFE), batch 256, torch.no_grad().
--threads best runs 1 and 2 threads in separate processes and reports the faster.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=".*NumPy.*")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models as tm  # noqa: E402

SAMPLE_STEPS = 18


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(preset, n_batches, batch, gen):
    shape = tm.PRESETS[preset]["shape"]
    if preset == "toy-mlp":
        return [tm.two_moons(batch, generator=gen) for _ in range(n_batches)]
    return [torch.rand((batch,) + shape, generator=gen) * 2 - 1 for _ in range(n_batches)]


@torch.no_grad()
def heun_sample(net, x, steps=SAMPLE_STEPS):
    """Integrate dx/dt = net(x,t) from t=1 to t=0 on a uniform grid; Heun, Euler last step.
    NFE = 2*steps - 1."""
    n = x.shape[0]
    ts = [1.0 - i / steps for i in range(steps + 1)]
    ts[-1] = 0.0
    nfe = 0
    for i in range(steps):
        t0, t1 = ts[i], ts[i + 1]
        dt = t1 - t0
        d0 = net(x, torch.full((n,), t0))
        nfe += 1
        xe = x + dt * d0
        if i == steps - 1:
            x = xe
        else:
            d1 = net(xe, torch.full((n,), t1))
            nfe += 1
            x = x + dt * 0.5 * (d0 + d1)
    return x, nfe


def run_one(args, threads):
    torch.set_num_threads(threads)
    base_rss = peak_rss_mib()  # after importing torch, before building anything
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    cfg = tm.PRESETS[args.preset]
    net = tm.build(args.preset)
    res = dict(impl="torch", torch_version=torch.__version__, preset=args.preset,
               threads=threads, params=tm.count_params(net))
    if not args.sample:
        batch = cfg["batch"]
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        data = make_data(args.preset, 8, batch, gen)

        def step(i):
            opt.zero_grad(set_to_none=True)
            loss = tm.fm_loss(net, data[i % len(data)])
            loss.backward()
            opt.step()
            return loss

        for i in range(args.warmup):
            step(i)
        t0 = time.perf_counter()
        for i in range(args.steps):
            loss = step(i)
        loss = float(loss.detach())
        el = time.perf_counter() - t0
        res.update(mode="train", batch=batch, lr=cfg["lr"], steps=args.steps,
                   warmup=args.warmup, seconds=el, steps_per_s=args.steps / el,
                   samples_per_s=args.steps * batch / el, final_loss=loss)
    else:
        batch = args.sample_batch
        net.eval()
        shape = (batch,) + cfg["shape"]
        for _ in range(args.warmup):
            heun_sample(net, torch.randn(shape, generator=gen))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            _, nfe = heun_sample(net, torch.randn(shape, generator=gen))
        el = time.perf_counter() - t0
        res.update(mode="sample", sampler="heun-uniform-t", sample_steps=SAMPLE_STEPS, nfe=nfe,
                   batch=batch, runs=args.steps, warmup=args.warmup, seconds=el,
                   runs_per_s=args.steps / el, samples_per_s=args.steps * batch / el,
                   nfe_per_s=args.steps * nfe / el)
    res["peak_rss_mib"] = peak_rss_mib()
    res["import_rss_mib"] = base_rss
    return res


def report(res, as_json):
    if as_json:
        print(json.dumps(res), flush=True)
        return
    print(f"torch {res['torch_version']}  preset {res['preset']}  params {res['params']:,}  "
          f"threads {res['threads']}")
    if res["mode"] == "train":
        print(f"  train: batch {res['batch']}, {res['steps']} steps (+{res['warmup']} warmup) "
              f"in {res['seconds']:.3f} s")
        print(f"  steps/s   {res['steps_per_s']:.2f}")
        print(f"  samples/s {res['samples_per_s']:.1f}")
        print(f"  final loss {res['final_loss']:.4f}")
    else:
        print(f"  sample: Heun {res['sample_steps']} uniform-t steps ({res['nfe']} NFE), "
              f"batch {res['batch']}, {res['runs']} runs (+{res['warmup']} warmup) "
              f"in {res['seconds']:.3f} s")
        print(f"  samples/s {res['samples_per_s']:.2f}")
        print(f"  NFE/s     {res['nfe_per_s']:.2f}")
    print(f"  peak RSS  {res['peak_rss_mib']:.1f} MiB "
          f"(after 'import torch': {res['import_rss_mib']:.1f} MiB)")
    if "tried" in res:
        print("  tried: " + ", ".join(f"{t['threads']} thr: {t['samples_per_s']:.2f} samples/s"
                                      for t in res["tried"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(tm.PRESETS))
    ap.add_argument("--threads", default="1", help="N or 'best' (tries 1 and 2)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed train steps (sample mode: timed sampler runs)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--sample", action="store_true", help="time the Heun PF-ODE sampler")
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()
    toy = args.preset == "toy-mlp"
    if args.steps is None:  # unet sampling: one run of 35 NFE at batch 256 is ~1 min on 2 cores
        args.steps = (5 if toy else 1) if args.sample else (200 if toy else 20)
    if args.warmup is None:
        args.warmup = (1 if toy else 0) if args.sample else 5
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    if args.threads == "best":
        tried = []
        for n in (1, 2):
            cmd = [sys.executable, os.path.abspath(__file__), "--preset", args.preset,
                   "--threads", str(n), "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--sample-batch", str(args.sample_batch), "--json"]
            if args.sample:
                cmd.append("--sample")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            tried.append(json.loads(out.strip().splitlines()[-1]))
        best = dict(max(tried, key=lambda r: r["samples_per_s"]))
        best["threads_mode"] = "best"
        best["tried"] = [dict(threads=r["threads"], samples_per_s=r["samples_per_s"],
                              peak_rss_mib=r["peak_rss_mib"]) for r in tried]
        report(best, args.json)
        return
    try:
        threads = int(args.threads)
        assert threads >= 1
    except (ValueError, AssertionError):
        ap.error("--threads must be a positive integer or 'best'")
    report(run_one(args, threads), args.json)


if __name__ == "__main__":
    main()
