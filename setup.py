from setuptools import find_packages, setup

with open("requirements.txt") as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="etchat",
    version="0.1.0",
    description="E.T. Chat: a time-sensitive video LLM, with training, E.T. Bench inference and scoring",
    packages=find_packages(include=["etchat", "etchat.*"]),
    package_data={
        "etchat": [
            "eval/etbench/*.json",
            "eval/report/published/*.json",
            "model/keys/*.tsv",
            "eval/lmms/tasks/*.yaml",
            "eval/lmms/tasks/_template_yaml",
            "eval/lmms/tasks/_tasks.json",
        ]
    },
    python_requires=">=3.10",
    install_requires=requirements,
    # lmms: the lmms-eval bridge (etchat/eval/lmms). Its wheel requires torchvision and timm, which pull a CUDA torch
    # on CPU machines; scripts/setup_env.sh installs it without dependencies plus what its core imports
    # (requirements-lmms.txt) instead. filelock 4 breaks lmms-eval 0.7.3's evaluator.
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6"],
        "demo": ["gradio>=5"],
        "lmms": ["lmms-eval>=0.7.3", "filelock<4"],
    },
    entry_points={"lmms_eval.models": ["etchat = etchat.eval.lmms:manifest"]},
)
