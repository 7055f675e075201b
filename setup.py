"""Packaging for edge-agent: the daemon, its drivers, detectors and field tools."""

from pathlib import Path

from setuptools import find_packages, setup

# The bureau's console: pure-Python wheels on PyPI for x86_64 and aarch64 alike.
BUREAU = ["starlette>=0.40", "uvicorn>=0.30", "Jinja2>=3.1", "python-multipart>=0.0.9",
          # a city's store: PostgreSQL through psycopg 3 (binary wheels for x86_64 and aarch64) and its pool
          "psycopg[binary]>=3.1", "psycopg-pool>=3.2"]

setup(
    name="edge-agent",
    version="0.1.0",
    description="On-site agent for construction-site noise, dust and video supervision boxes",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["edge_agent*", "detectors*", "drivers*", "firmware_tools*", "bureau*"]),
    # The example config and meter profiles travel inside the package as `edge_agent/data`
    # would hide them from technicians; instead config/ is mapped as package data of its own.
    package_dir={"": "."},
    include_package_data=True,
    package_data={
        "edge_agent": ["py.typed", "sound/models/*"],  # YAMNet, its class map, card and licence
        "bureau": ["web/templates/*.html", "web/static/*", "store/migrations/*.sql"],
        "detectors": ["models/*.tflite", "models/*.yaml", "models/*.csv", "models/*.npz", "models/*.txt",
                      "training/README.md", "training/*.csv"],
    },
    data_files=[
        ("share/edge-agent/config", ["config/example.yaml", "config/demo.yaml"]),
        ("share/edge-agent/config/profiles", sorted(str(p) for p in Path("config/profiles").glob("*.yaml"))),
    ],
    install_requires=[
        "numpy>=1.24",
        "pydantic>=2.5,<3",
        "PyYAML>=6.0",
        "paho-mqtt>=2.0,<3",
        "cryptography>=41",
        "pyserial>=3.5",
        "pymodbus>=3.8,<4",
        "sounddevice>=0.5",
        "gpiozero>=2.0",
        "opencv-python-headless>=4.8",
        "av>=14",
        "Pillow>=10.1",
        "ai-edge-litert>=1.0",
        "scipy>=1.10",  # the microphone's weighting filters (sosfilt); aarch64 wheels on PyPI
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3.5", "ruff>=0.5", "mypy>=1.8", "types-PyYAML", "amqtt>=0.11",
                 # the bureau's console (edge-bureau) and its browser tests (Debian's chromium + chromedriver)
                 *BUREAU, "selenium>=4.20"],
        "demo": ["amqtt>=0.11"],
        # The bureau's side: not installed on a box.
        "bureau": BUREAU,
    },
    entry_points={
        "console_scripts": [
            "edge-agent=edge_agent.cli:main",
            "edge-fw=firmware_tools.cli:main",
            "edge-bureau=bureau.cli:main",
        ]
    },
)
