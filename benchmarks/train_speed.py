"""Training speed: the usual student pipeline against the project's, on the same machine, in one run.

    python benchmarks/train_speed.py                 # CPU (or CUDA when present)
    python benchmarks/train_speed.py --json benchmarks/results/<machine kind>.json

Run it on each kind of machine (one with native bf16, one without: on a machine with native bf16,
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 caps it to AVX2, which the results then say).

(a) usual:  Dataset over file paths opening each image with PIL, per-sample torchvision transforms
            (Resize, RandomResizedCrop, RandomHorizontalFlip, ColorJitter, ToTensor, Normalize; image and mask
            together through transforms.v2 for the U-Net), DataLoader(num_workers=2, pin_memory=True,
            shuffle=True), float32, NCHW.
(b) ours:   images decoded once into uint8 tensors (on the GPU when there is one), augmentation on whole
            batches (`common.BatchAugment`), the precision and memory layout that `common.compute_precision`
            chooses for this machine (bf16 autocast only where it is native and faster), through
            `common.train_step`, the step `common.fit` takes.
Same model, same batch size, same optimiser. Each pipeline is timed --repeats times (median). Prints images/s of
both, their ratio, the achieved GFLOP/s of the training step (FLOPs per image counted by torch.utils.flop_counter)
against the matmul peak of the chosen precision measured in this run, and inference images/s (fp32, as the
notebooks evaluate). The JSON records the machine (CPU model and the flags that matter), the precision, torch,
steps, classes, data source and commit. The last line is `speedup: <ratio>x` for the classifier.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402


# ---------------------------------------------------------------- (a) the usual pipeline, as a student writes it
class FileClassification(torch.utils.data.Dataset):
    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        img = Image.open(self.files[i]).convert("RGB")
        return self.transform(img), self.labels[i]


class FileSegmentation(torch.utils.data.Dataset):
    def __init__(self, pairs, transform):
        self.pairs, self.transform = pairs, transform

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF
        img = Image.open(self.pairs[i][0]).convert("RGB")
        mask = tv_tensors.Mask(TF.pil_to_tensor(Image.open(self.pairs[i][1]).convert("L")) // 255)
        x, m = self.transform(img, mask)
        return x, m.float()


def usual_loaders(tiny_root, moon_root, n_classes, batch):
    from torchvision import transforms as T
    from torchvision.transforms import v2
    folder = common.tiny_folder(tiny_root)
    wnids = (folder / "wnids.txt").read_text().split()[:n_classes]
    files, labels = [], []
    for k, w in enumerate(wnids):
        fs = sorted((folder / "train" / w / "images").iterdir())
        files += fs
        labels += [k] * len(fs)
    norm = T.Normalize(common.IMAGENET_MEAN, common.IMAGENET_STD)
    cls_tf = T.Compose([T.Resize(128), T.RandomResizedCrop(128, scale=(0.35, 1)), T.RandomHorizontalFlip(),
                        T.ColorJitter(0.3, 0.3, 0.3), T.ToTensor(), norm])
    moon = common.moon_folder(moon_root)
    pairs = [(p, moon / "images" / "ground" / p.name.replace("render", "ground"))
             for p in sorted((moon / "images" / "render").iterdir())]
    seg_tf = v2.Compose([v2.Resize((128, 128)), v2.RandomResizedCrop(128, scale=(0.6, 1)),
                         v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.ColorJitter(0.2, 0.2, 0.1),
                         v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(common.IMAGENET_MEAN, common.IMAGENET_STD)])
    kw = dict(batch_size=batch, shuffle=True, num_workers=2, pin_memory=True, drop_last=True,
              persistent_workers=True)
    return (torch.utils.data.DataLoader(FileClassification(files, labels, cls_tf), **kw),
            torch.utils.data.DataLoader(FileSegmentation(pairs, seg_tf), **{**kw, "batch_size": batch // 8}))


def time_usual(model, loader, loss_fn, steps, device):
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(loader)
    n, t0 = 0, None
    for s in range(steps + 2):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if s == 2:                      # two warm-up steps (workers starting, allocator)
            sync(device)
            t0, n = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- (b) the project's step
def time_ours(model, data, task, steps, batch, device, aug, prec):
    common.to_device(model, device, prec)
    model.train()
    opt, scaler = torch.optim.AdamW(model.parameters(), lr=1e-3), prec.scaler()
    images = data.images.to(device)
    targets = (data.masks if isinstance(data, common.MaskSet) else data.labels).to(device)
    gen = torch.Generator().manual_seed(0)
    n, t0 = 0, None
    for s in range(steps + 2):
        if s == 2:
            sync(device)
            t0, n = time.perf_counter(), 0
        idx = torch.randint(0, len(images), (batch,), generator=gen).to(device)
        x, y = common.preprocess_batch(images[idx], targets[idx], device, prec, aug, gen)
        common.train_step(model, x, y, task, opt, scaler, prec)
        n += batch
    sync(device)
    return n / (time.perf_counter() - t0)


def time_model_only_fp32(model, batch, steps, device, num_classes=None):
    """The usual float32 NCHW training step on one fixed batch, no data loading: the usual pipeline's ceiling."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 128, 128, device=device)
    for s in range(steps + 2):
        if s == 2:
            sync(device)
            t0 = time.perf_counter()
        out = model(x)
        loss = out.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def time_inference(model, images, batch, device, prec, reps=3):
    common.to_device(model, device, prec.evaluation())
    common.predict(model, images[:batch], batch, device)      # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        common.predict(model, images[:batch * 2], batch, device)
    sync(device)
    return reps * min(len(images), batch * 2) / (time.perf_counter() - t0)


def commit():
    """The commit measured, with '+dirty' when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_flops_per_image(model):
    """FLOPs of one training step (forward + backward) per image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    model = model.float().train()
    x = torch.randn(2, 3, 128, 128)
    with FlopCounterMode(display=False) as fc:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 2


def matmul_peak(device, precision, n=4096, reps=10):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per measurement")
    ap.add_argument("--batch", type=int, default=128, help="classifier batch (the U-Net uses batch/8)")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--data", default=None, help="folder with the archives (default: data/, ../shared/data)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--repeats", type=int, default=3, help="times each pipeline is timed (the median is kept)")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of our classifier step")
    args = ap.parse_args(argv)
    device = common.default_device()
    if device.type == "cpu":
        torch.set_num_threads(2 if torch.get_num_threads() >= 2 else torch.get_num_threads())

    prec = common.compute_precision(device)
    tiny_root, moon_root = common.find_dataset("tiny", args.data), common.find_dataset("moon", args.data)
    tmp = Path(tempfile.mkdtemp())
    real = tiny_root is not None and moon_root is not None
    if not real:
        print("real data not found: using synthetic stand-ins")
        tiny_root = common.make_synthetic_tiny_imagenet(tmp / "tiny", args.classes, 100, 1)
        moon_root = common.make_synthetic_moon(tmp / "moon", 64, (360, 240))
    tiny = common.read_tiny_imagenet(tiny_root, classes=args.classes, progress=False)
    moon = common.read_moon(moon_root, progress=False)
    cls_loader, seg_loader = usual_loaders(tiny_root, moon_root, args.classes, args.batch)

    results = {"device": device.type, "machine": common.machine(device), "cpu": common.cpu_name(),
               "cpu_flags": sorted(common.cpu_flags()), "isa": torch.backends.cpu.get_cpu_capability(),
               "native_bf16": common.native_bf16(), "precision": prec.name, "precision_reason": prec.reason,
               "channels_last": prec.channels_last, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "steps": args.steps, "repeats": args.repeats, "classes": args.classes,
               "data": "real" if real else "synthetic", "commit": commit(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["matmul_peak_gflops"] = peak = matmul_peak(device, prec.name)
    print(f"machine: {results['machine']}; precision {prec.name} ({prec.reason}); {prec.name} matmul peak "
          f"(4096², measured now): {peak:.0f} GFLOP/s")
    rows = []
    for name, make, data, loader, task, batch, aug, loss_fn in [
        ("classifier", lambda: common.Classifier(args.classes), tiny, cls_loader, common.ClassificationTask(0.1),
         args.batch, common.BatchAugment(common.AugmentConfig()), F.cross_entropy),
        ("unet", common.unet, moon, seg_loader, common.SegmentationTask(), args.batch // 8,
         common.BatchAugment(common.AugmentConfig(scale=(0.6, 1), vflip=True, rotate=10)),
         lambda o, y: F.binary_cross_entropy_with_logits(o, y) + common.dice_loss(o, y))]:
        flops = train_flops_per_image(make())
        usual_runs, ours_runs = [], []
        for _ in range(args.repeats):        # interleaved, so a slow spell of the machine hits both
            torch.manual_seed(0)
            usual_runs.append(time_usual(make(), loader, loss_fn, args.steps, device))
            torch.manual_seed(0)
            ours_runs.append(time_ours(make(), data, task, args.steps * (8 if device.type == "cuda" else 1), batch,
                                       device, aug, prec))
        usual, ours = statistics.median(usual_runs), statistics.median(ours_runs)
        torch.manual_seed(0)
        fp32_only = time_model_only_fp32(make(), batch, max(3, args.steps // 2), device)
        infer = time_inference(make(), data.images, 256 if name == "classifier" else 64, device, prec)
        row = {"model": name, "batch": batch, "usual_img_s": usual, "ours_img_s": ours, "speedup": ours / usual,
               "usual_runs_img_s": usual_runs, "ours_runs_img_s": ours_runs,
               "usual_model_only_fp32_img_s": fp32_only,
               "train_gflop_per_img": flops / 1e9, "ours_gflops": ours * flops / 1e9,
               "pct_of_peak": 100 * ours * flops / 1e9 / peak, "inference_img_s": infer}
        rows.append(row)
        print(f"{name:10s} batch {batch:3d}: usual {usual:7.1f} img/s | ours {ours:7.1f} img/s | speedup "
              f"{ours / usual:5.2f}x | {flops / 1e9:.2f} GFLOP/img -> {row['ours_gflops']:.0f} GFLOP/s "
              f"({row['pct_of_peak']:.0f}% of peak) | inference {infer:.0f} img/s | usual step alone "
              f"(fp32, no data) {fp32_only:.1f} img/s", flush=True)
    results["rows"] = rows
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
            time_ours(common.Classifier(args.classes), tiny, common.ClassificationTask(0.1), 2, args.batch, device,
                      common.BatchAugment(common.AugmentConfig()), prec)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.json:
        common.save_json(results, args.json)
    print(f"speedup: {rows[0]['speedup']:.2f}x")


if __name__ == "__main__":
    main()
