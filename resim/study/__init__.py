"""``resim study``: the RS3L comparison, end to end, from one TOML file.

A study generates top / W / QCD samples with RS3L-style variations (nominal, new seed, FSR
scale up and down, another shower), pre-trains one encoder with each self-supervised
objective, fine-tunes every pre-trained encoder and a from-scratch baseline at several
labelled fractions, evaluates each classifier in distribution and under every variation
(:func:`resim.train.evaluate.evaluate_shift`), and writes a Markdown report with tables
and plots. The package, in the order a study runs:

    spec        the study config: :class:`Study`, :func:`parse_study`, :func:`load_study`
    cards       the shipped cards restricted to the study's variations, one per shard
    stages      a :class:`Stage` and its record (``stage.json``) and fingerprint
    plan        every stage of a study, each config checked: :func:`plan`
    work        what each kind of stage does (in a worker process)
    execute     running the stages, ``jobs`` at a time: :func:`execute`
    run         plan, execute, report: :func:`run_study`
    statistics  bootstrap errors, paired differences, the seeds' spread
    tables      the report's Markdown tables
    plots       the report's figures
    findings    the report's sentences computed from its numbers
    report      the report itself: :func:`write_report`
    command     the ``resim study`` command line

The shipped studies (``small``, ``tiny``) are ``train/configs/study/NAME.toml``, beside the
training configs they name.

The work is a list of *stages*, each a directory under the output::

    data/<sample>-<shard>/         resim generate          (<sample>-<shard>.h5)
    data/<sample>-test-<shard>/    resim generate          a test-only sample (optional)
    pretrain/<objective>-s<seed>/  resim train             (last.pt, metrics.csv)
    probe/<objective>-s<seed>/     resim probe             (probe.json, probe.png)
    finetune/<row>-<pct>-s<seed>/  resim finetune          (row: an objective or the baseline)
    evaluate/<row>-<pct>-s<seed>/  resim evaluate (nominal/), evaluate_shift (shift/)

Each stage directory holds ``stage.json``: the stage's *fingerprint* (a hash of
everything that determines its output: card text, events and seed; the effective training
config; the fingerprints of the stages it reads), whether it is complete, its run time and
its result. A rerun skips complete stages with the same fingerprint, resumes unfinished
ones (generation and training continue from their last commit or checkpoint, exactly),
and refuses to mix outputs made from other settings unless ``--overwrite`` (which remakes
those stages and, since fingerprints chain, everything downstream of them).

Stages run ``jobs`` at a time in separate processes (``spawn``), each with ``threads``
torch threads: on a small shared machine, two one-thread processes beat one two-thread
process (OpenMP threads spin while waiting). A stage starts as soon as the stages it reads
are complete, pre-trainings first. Seeds are fixed: the cards' run seeds for the data, and
``run.seed`` = the study seed for pre-training and fine-tuning, so a study reruns bit for
bit on CPU.

Design choices, and why:

* The variations come from the shipped cards (``top``, ``wqq``, ``qcd``) restricted to
  ``study.variations``: one source of physics settings. The restricted card text is
  written to ``DIR/cards/`` so ``resim generate --card DIR/cards/top-0.toml`` remakes a
  shard alone.
* A sample may be generated as several independent *shards* (card seed + shard index),
  so generation, dominated by the Vincia shower, uses both cores.
* Every objective must pre-train the *same* encoder (checked); the baseline is that
  encoder with random weights, fine-tuned with the same config.
* Fine-tuning reads nominal jets only (the classifier whose shift is measured), and runs
  at least ``finetune.min_steps`` optimiser steps: at 1 % of the labels an epoch is a
  single small batch, and ten of them would not train anything.
* Every pre-trained encoder is also probed frozen (``resim probe``'s code: kNN, linear
  probe, effective rank, shortcut R², against the same network at its initial weights),
  beside the fine-tuned taggers. ``[pretrain] sizes`` adds pre-trainings on nested
  fractions of the pre-training groups (``data.pretrain_fraction``), probed the same way:
  how the representation grows with pre-training data.
* ``test_events`` of a sample: a separate test-only sample (its own hard events from
  another run seed, every study variation), generated in ``test_shards`` shards and
  marked as the test split as a whole (the file attribute ``split = "test"``), so the
  JS distances under shift are measured on many more jets than the training sample's
  test fraction holds.

The training side (:mod:`resim.train`) knows nothing of the study or the generator: it
reads data sets. The study is where the two meet. Import from the modules (``from
resim.study.run import run_study``): this file imports nothing, so that ``resim`` commands
other than ``study`` do not load torch and the trainer.
"""
