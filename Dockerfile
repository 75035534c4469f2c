# vigilflow: one image for every role (ingest, detect, alert), built by docker-compose.yml.
#
#   docker build -t vigilflow .
#   docker run --rm vigilflow vigil --help
#
# The base is NVIDIA's CUDA runtime, so the detector can use a GPU (compose reserves one;
# set detector.device: cuda in configs/compose.yaml); on a machine without one the same
# image runs on the CPU. The ingest and alert roles never load torch (an import contract
# that `make test` checks), but the package depends on it, so a slimmer image for them
# would need torch split into an extra first: not done yet. Configs and trained scene
# checkpoints are mounted (see docker-compose.yml), not baked in.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

# Python 3.10 (Ubuntu 22.04's) and ffmpeg (PyAV's codecs come with its wheel; ffmpeg is for
# the operator's own tools and the RTSP test set-up).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY streamer ./streamer
COPY scenes ./scenes
COPY detector ./detector
COPY training ./training
COPY alerting ./alerting
COPY ui ./ui
COPY vigil ./vigil
COPY configs ./configs
# The same install as `make` (tests/alerting/test_deploy.py checks that the extras match).
RUN python3 -m venv /opt/venv && pip install '.[dev]'

RUN useradd --create-home --uid 1000 vigil && mkdir -p /app/runs /app/models && chown -R vigil /app/runs
USER vigil
CMD ["vigil", "--help"]
