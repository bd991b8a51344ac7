"""Faithful replay on real-shaped training scripts (issue 13).

Each case under scripts/ is recorded once (per test session); each of its HINDSIGHT questions is
replayed in its own copy of the recorded project and must store exactly the values that a fresh
full run of today's script logs, exit 0, and leave every user file byte-identical. The
unfaithful case may instead exit non-zero naming the state flor cannot restore, but must never
store a wrong value. See harness.py.

When the first question of a case is asked for, the case is recorded (alone, since flor plans
from the recorded timings) and all of its selected questions are checked, CORPUS_PARALLEL (2) at
a time: a replay's values do not depend on what else the machine runs. CORPUS_REPORT=path
appends one line per question (JSON) for a summary table.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.realworld.harness import Case, check, questions, record

CASES = [
    # pytorch/examples mnist/main.py: argparse, main(), train()/test() helpers, Adadelta + StepLR
    Case("mnist_examples", ("--epochs", "3", "--batch-size", "32", "--test-batch-size", "32", "--log-interval", "4"),
         prepare=("prepare.py",)),
    # karpathy/nanoGPT train.py: config globals + configurator, memmap data, grad accumulation
    Case("nanogpt_style", ("--max_iters=12", "--eval_interval=4"), prepare=("data/shakespeare_char/prepare.py",)),
    # HF *_no_trainer.py examples: a per-step OneCycleLR schedule, accumulation in the step loop
    Case("onecycle_warmup", ("--num_train_epochs", "3", "--eval_every", "2")),
    # torchvision references/classification: BatchNorm, train()/eval() switching, per-epoch saves
    Case("batchnorm_cnn", ("--epochs", "3", "--eval-freq", "2"), prepare=("prepare.py",)),
    # PyTorch reproducibility recipe: shuffle=True, num_workers=2, seed_worker, seeded generator
    Case("dataloader_shuffle", ("--epochs", "4"), prepare=("prepare.py",)),
    # Hydra/OmegaConf-style: a committed config file with dotted overrides
    Case("config_file", ("--config", "configs/default.json", "--set", "train.epochs=4"), prepare=("prepare.py",)),
    # Lightning docs' LitClassifier: save_hyperparameters, self.log, step outputs kept for epoch end
    Case("lightning_classifier", ("--epochs", "3")),
    # Lightning with a DataModule, torchmetrics, accumulation, ReduceLROnPlateau, EarlyStopping, ModelCheckpoint
    Case("lightning_datamodule", ("--max_epochs", "4")),
    # HF text-classification examples: a model from a config, compute_metrics, eval every epoch
    Case("hf_text_classifier", ("--epochs", "3")),
    # HF fine-tuning that keeps the best model: accumulation, warmup, EarlyStopping, a compute_loss override
    Case("hf_early_stopping", ("--epochs", "3")),
    # karpathy/makemore: an InfiniteDataLoader's one iterator (own generator) in a `while True` loop, eval every N, break
    Case("makemore_style", ("--max-steps", "60", "--eval-every", "20"), prepare=("prepare.py",)),
    # HF Accelerate examples/nlp_example.py: everything prepared, outputs = model(**batch), per-step scheduler
    Case("accelerate_nlp", ("--cpu", "--num_epochs", "3")),
    # PyTorch-examples time_sequence_prediction: LBFGS calls a closure that logs, forward and backward ~20 times a step
    Case("lbfgs_sequence", ("--steps", "4"), prepare=("prepare.py",)),
    # nanoGPT's DDP path and PyTorch's DDP tutorial: torchrun, 2 ranks (gloo, CPU), DistributedSampler.set_epoch,
    # an all_reduced epoch loss, a master_process-only eval that torch.saves; recorded twice with other args
    Case("ddp_tutorial", ("--epochs", "4", "--lr", "3e-3"), ranks=2, again=("--epochs", "3", "--lr", "1e-2", "--hidden", "32")),
    # deliberately unfaithful: a history list and a module-level global step, unseen by flor
    Case("unfaithful_state", ("--kwargs", "epochs=4"), unseen=("history", "global_step")),
]
QUESTIONS = [q for case in CASES for q in questions(case)]


@pytest.fixture(scope="session")
def verdicts(request, tmp_path_factory):
    """The verdict of a question; the first question of a case records it and checks every
    selected question of that case."""
    selected = [item.callspec.params["question"] for item in request.session.items
                if "question" in getattr(getattr(item, "callspec", None), "params", {})]
    futures, recordings = {}, []
    parallel = int(os.environ.get("CORPUS_PARALLEL", "2"))

    def get(question):
        if question.id not in futures:
            recording = record(question.case, tmp_path_factory.mktemp(question.case.name))
            recordings.append(recording)
            batch = [q for q in selected if q.case == question.case] or [question]
            with ThreadPoolExecutor(parallel) as pool:
                for q in batch:
                    futures[q.id] = pool.submit(check, q, recording, tmp_path_factory.mktemp(q.id))
        return futures[question.id].result()

    yield get
    for recording in recordings:
        recording.stop()


def test_every_case_has_questions():
    for case in CASES:
        kinds = {q.qid[0] for q in questions(case)}
        assert {"a", "d"} <= kinds, f"{case.name}: needs an epoch-level and a step-level question"


@pytest.mark.parametrize("question", QUESTIONS, ids=[q.id for q in QUESTIONS])
def test_replay_is_faithful(question, verdicts):
    verdict = verdicts(question)
    report = os.environ.get("CORPUS_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(json.dumps({
                "id": question.id, "workers": question.workers, "ok": verdict.ok, "exit": verdict.returncode,
                "expected": verdict.expected, "stored": verdict.stored, "wrong": verdict.wrong,
                "missing": verdict.missing, "extra": verdict.extra, "max_relative": verdict.max_relative,
                "changed": verdict.changed, "rewritten": verdict.rewritten, "added": verdict.added, "removed": verdict.removed,
                "replay_s": round(verdict.replay_s, 1), "plan": verdict.plan,
                "said": verdict.summary().split("said: ", 1)[1],
            }) + "\n")
    assert verdict.ok, verdict.summary()


def test_harness_rules():
    """The marker transforms and the pass rule, without running anything."""
    from tests.realworld.harness import Verdict, recorded_text, today_text

    text = "for e in x:\n    a = 1\n    # HINDSIGHT a_x: flor.log(\"x\", a)\n    # HINDSIGHT d_y: flor.log(\"y\", a)\n"
    assert recorded_text(text) == "for e in x:\n    a = 1\n"
    assert today_text(text, "d_y") == "for e in x:\n    a = 1\n    flor.log(\"y\", a)\n"
    (question,) = [q for q in questions(CASES[-1]) if q.qid == "a_list"]
    right = Verdict(question, 0, "done", expected=4, stored=4)
    assert right.ok
    assert not Verdict(question, 0, "done", expected=4, stored=4, wrong=1).ok
    assert not Verdict(question, 0, "done", expected=4, stored=4, rewritten=["out/ckpt.pt"]).ok
    assert Verdict(question, 1, "refused: memo would miss history", expected=4).ok  # names the state
    assert not Verdict(question, 1, "worker failed: IndexError", expected=4).ok
    assert not Verdict(question, 1, "refused: history", expected=4, stored=1, wrong=1).ok
    (plain,) = [q for q in questions(CASES[0]) if q.qid == "a_epoch"]
    assert not Verdict(plain, 1, "refused", expected=3).ok


def test_which_e_questions_share_the_case_fresh_run():
    """An e_* question shares the case's fresh run unless it would make another question log more
    often or rebind a name another statement reads (harness.own_fresh_run)."""
    from tests.realworld.harness import SCRIPTS, own_fresh_run

    script = (
        "def helper(x):\n"
        "    y = x + 1\n"
        "    # HINDSIGHT b_inner: flor.log('y', y)\n"
        "    return y\n"
        "def outer(x):\n"
        "    return helper(x)\n"
        "class Net:\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "for step in flor.loop('step', range(3)):\n"
        "    z = step\n"
        "    # HINDSIGHT d_z: flor.log('z', z)\n"
        "    # HINDSIGHT e_calls: flor.log('h', outer(step))\n"
        "    # HINDSIGHT e_rebinds: z = 0\n"
        "    # HINDSIGHT e_rebinds: flor.log('zero', z)\n"
        "    # HINDSIGHT e_plain: flor.log('sq', step * step)\n"
    )
    assert own_fresh_run(script, "e_calls")  # outer -> helper, which holds b_inner
    assert own_fresh_run(script, "e_rebinds")  # d_z reads z
    assert not own_fresh_run(script, "e_plain")
    in_method = script.replace("        return x\n", "        # HINDSIGHT b_fwd: flor.log('x', x)\n        return x\n")
    assert own_fresh_run(in_method, "e_plain")  # a method may run without being named
    shapes = {(case, qid): own_fresh_run((SCRIPTS / case / "train.py").read_text(), qid) for case, qid in (
        ("mnist_examples", "e_train_acc"), ("mnist_examples", "e_val_block"),
        ("batchnorm_cnn", "e_bn_forward"), ("batchnorm_cnn", "e_eval_helper"))}
    assert shapes == {("mnist_examples", "e_train_acc"): False, ("mnist_examples", "e_val_block"): False,
                      ("batchnorm_cnn", "e_bn_forward"): False, ("batchnorm_cnn", "e_eval_helper"): True}


def test_a_hung_child_is_stopped_with_the_stacks_of_every_process_it_forked(tmp_path, monkeypatch):
    """What the harness gives when a recording or fresh run hangs (dataloader_shuffle hung so
    under pytest): the Python stacks of the child and of the processes it forked."""
    from tests.realworld import harness

    monkeypatch.setattr(harness, "TIMEOUT_S", 3)
    (tmp_path / "hang.py").write_text(
        "import os, sys, time\n"
        "child = os.fork()\n"
        "print('started', flush=True)\n"
        "if child == 0:\n"
        "    time.sleep(600)  # the forked child\n"
        "else:\n"
        "    time.sleep(600)  # the parent\n")
    process = harness.start(tmp_path, "hang.py")
    with pytest.raises(harness.Hung) as caught:
        harness.finish(process, "hang.py")
    stacks = caught.value.stacks
    assert 'hang.py", line 5' in stacks and 'hang.py", line 7' in stacks, stacks
    assert process.returncode is not None


def test_the_truth_observer_puts_back_what_a_statement_changes():
    """truth.observed(), the ground truth's isolation, finds the modules and the loaders'
    generators itself (one pass over the collector's objects) and puts back everything."""
    import random

    import numpy
    import torch

    from tests.realworld import truth

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout())
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=5, shuffle=True,
                                         generator=torch.Generator().manual_seed(1))
    states = {k: v.clone() for k, v in model.state_dict().items()}
    rng = (random.getstate(), numpy.random.get_state()[1].copy(), torch.get_rng_state())
    order = loader.generator.get_state()
    with truth.observed():
        model(torch.randn(4, 3))  # BatchNorm's running stats and its batch count move
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model.eval()
        list(loader)  # the loader's own generator draws
        random.random(), numpy.random.rand(), torch.rand(1)
    assert all(torch.equal(v, states[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert torch.equal(loader.generator.get_state(), order)
    assert random.getstate() == rng[0] and (numpy.random.get_state()[1] == rng[1]).all()
    assert torch.equal(torch.get_rng_state(), rng[2])
