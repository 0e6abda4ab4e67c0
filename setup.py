from setuptools import find_packages, setup

with open("requirements.txt") as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="etchat",
    version="0.1.0",
    description="E.T. Chat: a time-sensitive video LLM, with training, E.T. Bench inference and scoring",
    packages=find_packages(include=["etchat", "etchat.*"]),
    package_data={"etchat": ["eval/etbench/*.json", "eval/report/published/*.json", "model/keys/*.tsv"]},
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"dev": ["pytest>=8", "ruff>=0.6"], "demo": ["gradio>=5"]},
)
