"""fairseq-rela: a fairseq plugin (load with --user-dir) for ReLA and norm-based attention analysis."""
from setuptools import find_packages, setup

setup(
    name="fairseq-rela",
    version="0.1.0",
    description="ReLA (rectified linear attention) and norm-based attention analysis for fairseq",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_rela", "fairseq_rela.*"]),
    python_requires=">=3.9",
    # fairseq itself is installed by scripts/install.sh (fairseq-fixed with --no-deps): declaring it
    # here would make pip pull torchaudio and a CUDA torch.
    install_requires=["torch>=2.1", "entmax>=1.1", "sacrebleu>=2.0", "numpy", "matplotlib>=3.5"],
    extras_require={"analysis": [], "align": ["eflomal>=2.0"], "test": ["pytest>=7", "sentencepiece"]},
    entry_points={
        "console_scripts": [
            "fairseq-rela-analyze = fairseq_rela.cli.analyze:cli_main",
            "fairseq-rela-aer = fairseq_rela.cli.aer:cli_main",
            "fairseq-rela-symmetrize = fairseq_rela.cli.symmetrize:cli_main",
            "fairseq-rela-average = fairseq_rela.cli.average:cli_main",
            "fairseq-rela-launch = fairseq_rela.cli.launch:cli_main",
            "fairseq-rela-convert = fairseq_rela.cli.convert:cli_main",
            "fairseq-rela-kernels = fairseq_rela.cli.kernels:cli_main",
        ]
    },
)
