# clasp_pl — common tasks. `make help` lists them. Every target that runs code installs first.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# The CPU build of torch that this machine has on local disk. A GPU cluster pins its own CUDA
# build instead: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH    ?= torch==2.13.0
CONFIG   ?=
ARGS     ?=
RESUME   ?=
NUM_NODES ?=
DEVICES  ?=
CKPT     ?=
SPLIT    ?= test
FOLDS    ?= 5
CV_OUT   ?= runs/cv/default
PYTEST_ARGS ?=
BENCH_ARGS ?=
N        ?= 25000
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

PRETRAIN_CONFIGS := --preset pretrain

.PHONY: help install pretrain pretrain-composition smoke slurm-pretrain eval-retrieval cv finetune probe bench bench-scale test lint clean-cache

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## create .venv (if absent) and install clasp_pl editable with test extras

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e ".[test]"
	touch $@

pretrain: install  ## train CLaSP on the embedded AMCSD default (CONFIG=extra.yaml ARGS="--trainer.max_epochs=3" RESUME=1 NUM_NODES= DEVICES=)
	$(BIN)/clasp fit $(PRETRAIN_CONFIGS) $(if $(CONFIG),--config $(CONFIG)) \
		$(if $(NUM_NODES),--trainer.num_nodes $(NUM_NODES) --trainer.strategy ddp) \
		$(if $(DEVICES),--trainer.devices $(DEVICES)) \
		$(if $(RESUME),--ckpt_path last) $(ARGS)

pretrain-composition: install  ## the composition-only baseline, same budget, into runs/composition (eval-retrieval adds its row)
	$(BIN)/clasp fit --preset composition $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

smoke: install  ## seconds-long run of the tiny model: a few batches, logs/checkpoints/records under runs/debug
	$(BIN)/clasp fit --preset smoke $(ARGS)

slurm-pretrain:  ## submit scripts/slurm_pretrain.sbatch (ARGS= extra `clasp fit` arguments)
	sbatch scripts/slurm_pretrain.sbatch $(ARGS)

eval-retrieval: install  ## retrieval + screening report of a checkpoint (CKPT=path, default the last (final weight average) of runs/pretrain; SPLIT=test|val)
	$(BIN)/clasp eval $(if $(CKPT),--ckpt $(CKPT)) --split $(SPLIT)

cv: install  ## k-fold by paper: one model per fold, mean ± std per row into CV_OUT (FOLDS=5 ARGS="--row 'composition=--preset composition'" CONFIG=)
	$(BIN)/clasp cv --folds $(FOLDS) --out $(CV_OUT) $(PRETRAIN_CONFIGS) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

finetune: install  ## fine-tune the pretrained crystal encoder on a property (CONFIG=conf/finetune_crystal_system.yaml ARGS="--model.init_from null")
	$(BIN)/clasp finetune fit --config $(or $(CONFIG),conf/finetune.yaml) $(ARGS)

probe: install  ## linear probes: pretrained crystal encoder vs random init (CKPT=path TARGET=mineral_class|crystal_system|<meta key> ARGS=)
	$(BIN)/clasp probe $(if $(CKPT),--ckpt $(CKPT)) --target $(or $(TARGET),mineral_class) $(ARGS)

bench: install  ## run the benchmarks and write bench/results.md (BENCH_ARGS=--quick for a smoke run)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

bench-scale: install  ## paper-scale benchmark on N generated structures (N=25000; data in data/scale), its section of bench/results.md
	$(BIN)/python bench/bench_scale.py --n $(N) --work data/scale --results bench/results.md $(BENCH_ARGS)

test: install  ## run the test suite (PYTEST_ARGS="-m 'not ddp'" to narrow it)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean-cache:  ## delete featurized caches (they are rebuilt on demand)
	rm -rf data/cache
