# resim for clusters: the generator (Pythia 8, FastJet, h5py) and MPICH from PyPI, in a
# virtual environment at /opt/venv.
#
#   docker build -t resim .                                  # generator image, no torch
#   docker build -t resim-train --build-arg EXTRAS=mpi,train .   # + training (CPU torch)
#   docker run --rm -v $PWD:/work resim generate --card smoke
#   mpiexec -n 2 resim generate --card smoke                 # inside the image
#
# EXTRAS are resim's pip extras. With `train` in them, torch is installed first, alone,
# from TORCH_INDEX (PyTorch's CPU-only index by default): a bare `torch` requirement
# resolved on PyPI is the multi-GB CUDA build. For GPU nodes pass e.g.
# --build-arg TORCH_INDEX=https://pypi.org/simple (the CUDA build PyPI serves).
# docs/cluster.md: Slurm, Apptainer, and how this MPICH meets the host's MPI.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG EXTRAS=mpi
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv && pip install --quiet --upgrade pip

# Dependencies first, in their own layer, read from pyproject.toml: editing resim's code
# does not re-download Pythia, FastJet, MPICH (or torch).
COPY pyproject.toml /src/pyproject.toml
RUN case ",${EXTRAS}," in \
      *,train,*) pip install --quiet --index-url "${TORCH_INDEX}" "${TORCH}" ;; \
    esac \
 && python -c "import sys, tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
reqs = p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]; \
print('\n'.join(r for r in reqs if not r.startswith('resim')))" "${EXTRAS}" > /tmp/requirements.txt \
 && pip install --quiet -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . /src
RUN pip install --quiet --no-deps "/src[${EXTRAS}]" \
 && rm -rf /src \
 && pip check \
 && resim --version \
 && if [ ",${EXTRAS}," = ",mpi," ]; then ! python -c "import torch" 2>/dev/null; fi

WORKDIR /work
ENTRYPOINT ["resim"]
CMD ["--help"]
