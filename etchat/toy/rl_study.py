"""Does stage 4 pay? GRPO of the `<vid>` matching against spending the same compute on more stage 3, in the toy world
(docs/benchmarks.md, "Stage 4 on the toy world").

    python -m etchat.toy.rl_study --output_dir work_dirs/rl_study --seeds 0 1 2

For each seed: tiny base weights, stages 1 and 2 and a short stage 3 (the quickstart's settings, stage 3 on the
grounding and dense-captioning tasks; the "start"), then two branches from the start, each through its launcher:
`scripts/train_stage_4.sh` for `--stage4_steps` steps, and `scripts/train_stage_3.sh` for `--more_stage3_steps` more
steps. The start and both branches answer the grounding questions (TVG, TAL, VHD) of the unseen test split with
`scripts/inference.sh` (published decoding, seed 0) and are scored by the official rules. Each training command's
CPU time (user + system, its processes and their children) is recorded, so that the branches' compute can be
compared. The synthetic data (seed 0) is shared by all seeds; the seed sets the base weights and every training run.

Every step whose output is whole is skipped, so a rerun resumes. Writes `results.json`, `results.md` (the table) and
`reward_curves.png` (stage 4's logged rewards, KL and skipped groups per step) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from etchat.cli import add_old_spelling, setup_logging
from etchat.io import file_problem, write_json_atomic

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
GROUNDING_TASKS = ("tvg", "tal", "vhd")
ROWS = (("tvg", "mIoU"), ("tvg", "F1"), ("tal", "F1"), ("vhd", "F1"))


@dataclass
class StudyConfig:
    train_videos: int = 300
    test_videos: int = 60
    images: int = 200
    stage3_tasks: str = "tvg,tal,vhd,dvc"
    stage3_epochs: int = 2
    stage4_tasks: str = "tvg,tal,vhd"
    stage4_steps: int = 60
    stage4_prompts: int = 4  # prompts per step
    stage4_lr: float = 2e-4
    stage4_args: str = ""  # more stage-4 flags, e.g. "--beta 0.02"
    more_stage3_steps: int = 180  # 0: no such branch
    more_stage3_lr: float = 2e-3
    torch_threads: int = 1  # OMP_NUM_THREADS of every command


def whole(*paths: Path) -> bool:
    return all(path.is_file() and not file_problem(path) for path in paths)


def trained(folder: Path) -> bool:
    return whole(folder / "config.json", folder / "model.safetensors")


def run(command: list[str], env: dict | None = None, log: Path | None = None) -> float:
    """Run `command` in the repository (output to `log`); return its CPU seconds (its processes and children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    logger.info("$ %s", " ".join(command))
    with open(log or os.devnull, "a") as out:
        result = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=out, stderr=out)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed with status {result.returncode}; see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    logger.info("done in %.0f s wall, %.0f s CPU", time.time() - started, cpu)
    return cpu


class Study:
    def __init__(self, out: Path, config: StudyConfig):
        self.out, self.config = out, config
        self.data = out / "data"
        self.env = {
            "SKIP_SETUP": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": str(config.torch_threads),
            "OMP_WAIT_POLICY": "PASSIVE",
            "NPROC_PER_NODE": "1",
            "DEEPSPEED_CONFIG": "none",
            "DTYPE": "float32",
            "PYTHONPATH": str(REPO),
        }

    def python(self, *args: str, log: Path | None = None) -> float:
        return run([sys.executable, *args], self.env, log)

    # ---- shared inputs ---------------------------------------------------------------------------------------------
    def make_data(self) -> None:
        c = self.config
        tasks = ",".join(dict.fromkeys(c.stage3_tasks.split(",") + list(GROUNDING_TASKS)))
        self.python("-m", "etchat.toy.synthetic", "--output_dir", str(self.data), "--seed", "0", "--tasks", tasks,
                    "--num_train_videos", str(c.train_videos), "--num_test_videos", str(c.test_videos),
                    "--num_images", str(c.images), log=self.out / "data.log")  # fmt: skip
        grounding = self.out / "annotations_grounding"
        grounding.mkdir(exist_ok=True)
        for task in GROUNDING_TASKS:
            source = self.data / "annotations" / "vid" / f"etbench_{task}_synthetic.json"
            (grounding / source.name).write_bytes(source.read_bytes())

    # ---- one seed --------------------------------------------------------------------------------------------------
    def train(self, stage: int, out: Path, start: str, extra: list[str], env: dict, log: Path) -> float:
        """`scripts/train_stage_{stage}.sh start` with EXTRA_ARGS = the tiny flags + extra; CPU seconds (0 if done)."""
        if trained(out):
            return json.loads((out / "cpu_seconds.json").read_text())["cpu_seconds"]
        env = {**self.env, "OUTPUT_DIR": str(out), "EXTRA_ARGS": " ".join(extra), "NUM_WORKERS": "2", **env}
        env.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        cpu = run(["bash", f"scripts/train_stage_{stage}.sh", start], env, log)
        write_json_atomic(out / "cpu_seconds.json", {"cpu_seconds": cpu})
        return cpu

    def evaluate(self, model: Path) -> dict:
        """TVG mIoU and F1, TAL F1, VHD F1 (percent) of `model` on the test split's grounding questions."""
        pred = model / "etbench_grounding"
        if not whole(pred / "metrics.json"):
            env = {**self.env, "ANNO_PATH": str(self.out / "annotations_grounding"), "VIDEO_PATH": str(self.data),
                   "PRED_PATH": str(pred)}  # fmt: skip
            run(["bash", "scripts/inference.sh", str(model), "--batch_size", "8", "--num_workers", "2",
                 "--max_new_tokens", "96"], env, model / "inference.log")  # fmt: skip
        metrics = json.loads((pred / "metrics.json").read_text())
        return {f"{task} {metric}": round(100 * metrics[task]["synthetic"][metric], 1) for task, metric in ROWS}

    def seed(self, seed: int) -> dict:
        root = self.out / f"seed{seed}"
        start, start_cpu = self.start_model(seed, root)
        models, cpu = {"stage 3 (start)": start}, {"stage 3 (start)": start_cpu}
        if self.config.more_stage3_steps > 0:
            models["more stage 3"] = root / "more-stage-3"
            cpu["more stage 3"] = self.more_stage3(seed, root, start, models["more stage 3"])
        models["stage 4"] = root / "stage-4"
        cpu["stage 4"] = self.stage4(seed, root, start, models["stage 4"])
        return {
            "seed": seed,
            "scores": {name: self.evaluate(model) for name, model in models.items()},
            "cpu_seconds": cpu,
            "stage4_log": stage4_history(models["stage 4"]),
        }

    def common_flags(self, seed: int, root: Path) -> list[str]:
        """The tiny geometry and the quickstart's settings shared by every stage of `seed`."""
        from etchat.toy.tiny import training_args

        base = root / "base"
        if not whole(base / "tiny.json"):
            args = ["--corpus", str(self.data), "--seed", str(seed), "--preset", "quickstart"]
            self.python("-m", "etchat.toy.tiny", str(base), *args, log=root / "base.log")
        tiny = json.loads((base / "tiny.json").read_text())
        flags = ["--report_to", "none", "--save_steps", "100000", "--save_total_limit", "1", "--logging_steps", "1"]
        return [*training_args(tiny), *flags, "--gradient_checkpointing", "False", "--seed", str(seed)]

    def stage3_flags(self, seed: int, root: Path) -> list[str]:
        c = self.config
        flags = ["--lora_enable", "False", "--tuning_mode", "llm", "--tasks", c.stage3_tasks]
        flags += ["--video_cache_size", str(c.train_videos), "--dataloader_persistent_workers", "True"]
        return self.common_flags(seed, root) + flags

    def start_model(self, seed: int, root: Path) -> tuple[Path, float]:
        """Stages 1, 2 and the short stage 3 of the quickstart's recipe; (stage-3 folder, its CPU seconds)."""
        common = self.common_flags(seed, root)
        tiny = json.loads((root / "base" / "tiny.json").read_text())
        data = {
            "IMAGE_PATH": str(self.data),
            "VIDEO_PATH": str(self.data),
            "PER_DEVICE_BATCH": "8",
            "GLOBAL_BATCH": "8",
        }
        stage1 = {**data, "ANNO_PATH": str(self.data / "stage1.json")}
        stage1.update(VISION_TOWER_PATH=tiny["pretrain_vision_tower"], QFORMER_PATH=tiny["pretrain_qformer"])
        flags = [*common, "--num_train_epochs", "1", "--learning_rate", "2e-3"]
        self.train(1, root / "stage-1", tiny["model_name_or_path"], flags, stage1, root / "stage-1.log")
        stage2 = {**data, "ANNO_PATH": str(self.data / "stage2.json")}
        flags = [*common, "--num_train_epochs", "1", "--learning_rate", "1e-3", "--lora_enable", "False"]
        flags += ["--tuning_mode", "llm", "--group_by_modality", "False"]
        self.train(2, root / "stage-2", str(root / "stage-1"), flags, stage2, root / "stage-2.log")
        stage3 = {**data, "ANNO_PATH": str(self.data / "stage3.json")}
        flags = [*self.stage3_flags(seed, root), "--num_train_epochs", str(self.config.stage3_epochs)]
        flags += ["--learning_rate", "2e-3"]
        start = root / "stage-3"
        return start, self.train(3, start, str(root / "stage-2"), flags, stage3, root / "stage-3.log")

    def more_stage3(self, seed: int, root: Path, start: Path, out: Path) -> float:
        c = self.config
        env = {"ANNO_PATH": str(self.data / "stage3.json"), "VIDEO_PATH": str(self.data)}
        env.update(PER_DEVICE_BATCH="8", GLOBAL_BATCH="8")
        flags = [*self.stage3_flags(seed, root), "--max_steps", str(c.more_stage3_steps)]
        flags += ["--learning_rate", str(c.more_stage3_lr)]
        return self.train(3, out, str(start), flags, env, root / "more-stage-3.log")

    def stage4(self, seed: int, root: Path, start: Path, out: Path) -> float:
        c = self.config
        env = {"ANNO_PATH": str(self.data / "stage3.json"), "VIDEO_PATH": str(self.data), "NUM_GENERATIONS": "8"}
        env.update(PER_DEVICE_BATCH=str(c.stage4_prompts), GLOBAL_BATCH=str(c.stage4_prompts))
        env.update(MAX_STEPS=str(c.stage4_steps))
        flags = [*self.common_flags(seed, root), "--lora_enable", "False", "--tuning_mode", "llm"]
        flags += ["--tasks", c.stage4_tasks, "--video_cache_size", str(c.train_videos)]
        flags += ["--dataloader_persistent_workers", "True", "--max_new_tokens", "32"]
        flags += ["--learning_rate", str(c.stage4_lr), *c.stage4_args.split()]
        return self.train(4, out, str(start), flags, env, root / "stage-4.log")


def stage4_history(folder: Path) -> list[dict]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "reward" in entry]


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 1)


def table(results: list[dict], test_videos: int) -> str:
    """Markdown: one column per model, rows per metric (mean over seeds, then each seed), and CPU seconds."""
    models = list(results[0]["scores"])
    header = f"| test split ({test_videos} unseen videos) | "
    lines = [header + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for task, metric in ROWS:
        key = f"{task} {metric}"
        cells = []
        for model in models:
            values = [r["scores"][model][key] for r in results]
            cells.append(f"{mean(values)} ({' / '.join(str(v) for v in values)})")
        lines.append(f"| {task.upper()} {metric} | " + " | ".join(cells) + " |")
    cpu = [f"{mean([r['cpu_seconds'][m] for r in results]):.0f}" for m in models]
    lines.append("| training CPU seconds (mean) | " + " | ".join(cpu) + " |")
    return "\n".join(lines)


CURVE_KEYS = ("reward", "reward_time", "reward_format", "kl", "skipped_groups")


def curve_table(results: list[dict], block: int = 10) -> str:
    """Markdown: stage 4's logged values averaged over blocks of `block` steps, one row per seed and block."""
    lines = ["| seed | steps | " + " | ".join(CURVE_KEYS) + " |", "|---" * (len(CURVE_KEYS) + 2) + "|"]
    for result in results:
        log = result["stage4_log"]
        for start in range(0, len(log), block):
            entries = log[start : start + block]
            cells = []
            for key in CURVE_KEYS:
                values = [e[key] for e in entries if key in e]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "-")
            steps = f"{entries[0]['step']}-{entries[-1]['step']}"
            lines.append(f"| {result['seed']} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(results: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = (("reward_time", "time reward (tIoU / F1 / proximity)"), ("reward_format", "format reward"),
              ("kl", "KL to the start model"), ("skipped_groups", "share of skipped groups"))  # fmt: skip
    figure = Figure(figsize=(12, 3))
    FigureCanvasAgg(figure)
    for i, (key, title) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), i + 1)
        for result in results:
            steps = [e["step"] for e in result["stage4_log"] if key in e]
            values = [e[key] for e in result["stage4_log"] if key in e]
            window = 5  # running mean: a step sees 4 prompts only
            smooth = [sum(values[max(0, j - window + 1) : j + 1]) / len(values[max(0, j - window + 1) : j + 1])
                      for j in range(len(values))]  # fmt: skip
            axis.plot(steps, smooth, label=f"seed {result['seed']}")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step")
    figure.axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.toy.rl_study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default="work_dirs/rl_study", help="where everything goes")
    add_old_spelling(parser, "--out", "output_dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the base weights and runs")
    for name, value in asdict(StudyConfig()).items():
        parser.add_argument(f"--{name}", type=type(value), default=value, help=f"(default: {value})")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    setup_logging()
    config = StudyConfig(**{name: getattr(args, name) for name in asdict(StudyConfig())})
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    study = Study(out, config)
    study.make_data()
    results = [study.seed(seed) for seed in args.seeds]
    write_json_atomic(out / "results.json", {"config": asdict(config), "results": results}, indent=2)
    summary = table(results, config.test_videos) + "\n\n" + curve_table(results)
    (out / "results.md").write_text(summary + "\n")
    plot_curves(results, out / "reward_curves.png")
    print(summary)
    return results


if __name__ == "__main__":
    main()
