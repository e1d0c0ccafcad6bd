"""Issue 20: the drop-in edges. Each odd model either works through ``Ensemble`` (training mode
computes the model's own function) or fails loudly with an error that names the fix; and the
quiet misuses of the penalties (eval mode, one model K times, float labels, a missing batch
axis) are named as such."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, deg_penalty, gal_penalty

K = 3


def body() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def images(batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 1, 8, 8, generator=generator), torch.randint(0, 10, (batch,), generator=generator)


def ensemble_of(make, **kwargs) -> Ensemble:
    torch.manual_seed(0)
    return Ensemble([make() for _ in range(K)], pdd=PriorityDiversifiedDropout(K), **kwargs)


def split_matches_whole(ensemble: Ensemble, x: torch.Tensor) -> None:
    """Without dropping anything, the split forward (body, then head) is each model's own forward.

    PDD with alpha = beta = 1 keeps every unit outside the priority interval at rate 1 - N/C,
    so it is swapped for None; the split path runs through ``member_outputs`` all the same.
    """
    pdd, ensemble.pdd = ensemble.pdd, None
    try:
        ensemble.train()
        torch.manual_seed(5)
        split = ensemble.member_outputs(x).logits
        torch.manual_seed(5)
        whole = torch.stack([model(x) for model in ensemble.members])
        torch.testing.assert_close(split, whole)
    finally:
        ensemble.pdd = pdd


# --- the ten-plus odd models ------------------------------------------------------------------


class TanhTimesFive(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        return torch.tanh(self.fc(self.body(x))) * 5


class Halved(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x)) / 2.0


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        features = self.body(x)
        return self.fc(features), features


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        return {"logits": self.fc(self.body(x))}


class Logits(nn.Module):
    """The documented wrapper (docs/api.md): the model's logits tensor alone."""

    def __init__(self, model: nn.Module, key: int | str):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        return self.model(x)[self.key]


class ConvHead(nn.Module):
    """A SqueezeNet-style classifier: a 1x1 convolution to the classes, then pooling."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(8, 10, 1)

    def forward(self, x):
        return self.classifier(self.features(x)).mean(dim=(2, 3))


class HeadUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x)) + self.fc(self.body(x.flip(-1)))


class HeadReadNotCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        return F.linear(self.body(x), self.fc.weight, self.fc.bias)


class ViewAfterHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = body(), nn.Linear(32, 10)

    def forward(self, x):
        logits = self.fc(self.body(x))
        return logits.view(logits.shape[0], -1)


def log_softmax_tail() -> nn.Sequential:
    return nn.Sequential(body(), nn.Linear(32, 10), nn.LogSoftmax(dim=1))


def dropout_after_fc() -> nn.Sequential:
    return nn.Sequential(body(), nn.Linear(32, 10), nn.Dropout(0.5))


def nested_sequential() -> nn.Sequential:
    return nn.Sequential(body(), nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 10))))


def lazy_head() -> nn.Sequential:
    return nn.Sequential(body(), nn.LazyLinear(10))


# Models whose final op follows the head: training would silently compute another function.
TRAILING = {
    "log-softmax after the head": (log_softmax_tail, "LogSoftmax"),
    "tanh(fc) * 5": (TanhTimesFive, "MulBackward"),
    "fc / 2.0": (Halved, "DivBackward"),
    "dropout after the fc, training mode": (dropout_after_fc, "follows the head"),
}


@pytest.mark.parametrize("case", list(TRAILING))
def test_an_operation_after_the_head_is_refused_naming_it_and_the_fix(case):
    make, named = TRAILING[case]
    ensemble = ensemble_of(make).train()
    x, y = images()
    with pytest.raises(ValueError, match=rf"model 0 to be the output of its head .*{named}.*Move it out of the model.*`head=`"):
        ensemble.member_outputs(x)
    # The penalties run the same split forward, so they refuse too instead of training on it.
    with pytest.raises(ValueError, match="follows the head"):
        deg_penalty(ensemble, x, y)


def test_the_fix_for_a_trailing_layer_works():
    """The error's advice: the model without its trailing layer, the layer applied to the output."""
    models = [log_softmax_tail() for _ in range(K)]
    ensemble = Ensemble([nn.Sequential(*model[:-1]) for model in models], pdd=PriorityDiversifiedDropout(K))
    x, y = images()
    split_matches_whole(ensemble, x)
    out = deg_penalty(ensemble, x, y)
    assert out.logits.shape == (K, 6, 10) and torch.isfinite(out.penalty)


def test_dropout_after_the_head_is_accepted_in_eval_mode_where_it_is_the_identity():
    ensemble = ensemble_of(dropout_after_fc).eval()
    x, _ = images()
    outputs = ensemble.member_outputs(x)
    torch.testing.assert_close(outputs.logits, torch.stack([model(x) for model in ensemble.members]))


@pytest.mark.parametrize("make, key", [(TupleOutput, 0), (DictOutput, "logits")], ids=["tuple", "dict"])
def test_tuple_and_dict_outputs_are_refused_with_the_wrapper_and_the_wrapper_works(make, key):
    x, y = images()
    kind = "tuple" if key == 0 else "dict"
    ensemble = ensemble_of(make)
    with pytest.raises(ValueError, match=rf"returned a {kind}; `head=` cannot help.*wrap it.*docs/api\.md"):
        ensemble.member_outputs(x)
    with pytest.raises(ValueError, match=rf"returned a {kind}; wrap it"):
        ensemble.eval()(x)
    wrapped = Ensemble([Logits(make(), key) for _ in range(K)], pdd=PriorityDiversifiedDropout(K))
    split_matches_whole(wrapped, x)
    out = deg_penalty(wrapped.train(), x, y)
    out.penalty.backward()
    assert all(p.grad is not None for p in wrapped.parameters())


def test_a_conv_head_is_refused_naming_what_head_accepts_and_averages_without_pdd():
    with pytest.raises(ValueError, match=r"has none\. `head=` names an nn\.Linear only.*1x1 convolution.*without `pdd`"):
        ensemble_of(ConvHead)
    with pytest.raises(ValueError, match=r"`head` to name an nn\.Linear.*Conv2d.*convolutional classifier"):
        ensemble_of(ConvHead, head="classifier")
    models = [ConvHead() for _ in range(K)]
    x, y = images()
    averaged = Ensemble(models)
    torch.testing.assert_close(averaged(x), torch.stack([m(x).softmax(-1) for m in models]).mean(0))
    assert deg_penalty(averaged, x, y).logits.shape == (K, 6, 10)


def test_an_uninitialised_lazy_head_is_refused_and_works_once_run():
    x, y = images()
    with pytest.raises(ValueError, match=r"uninitialised LazyLinear; run each model once"):
        ensemble_of(lazy_head)
    models = [lazy_head() for _ in range(K)]
    for model in models:
        model(x)
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(K))
    assert ensemble.member_outputs(x).features.shape == (K, 6, 32)
    split_matches_whole(ensemble, x)


def test_a_nested_sequential_is_split_at_its_last_linear_and_trains_its_own_function():
    ensemble = ensemble_of(nested_sequential)
    assert ensemble.heads == ("1.2.0",) * K
    x, y = images()
    split_matches_whole(ensemble, x)
    assert torch.isfinite(deg_penalty(ensemble, x, y).penalty)


def test_a_head_called_twice_or_never_is_refused():
    x, _ = images()
    with pytest.raises(ValueError, match=r"call its head 'fc' exactly once.*called it 2 times.*own nn\.Linear"):
        ensemble_of(HeadUsedTwice).member_outputs(x)
    with pytest.raises(ValueError, match=r"called it 0 times.*call the head module"):
        ensemble_of(HeadReadNotCalled).member_outputs(x)


def test_a_view_of_the_heads_output_is_the_heads_output():
    ensemble = ensemble_of(ViewAfterHead)
    x, _ = images()
    split_matches_whole(ensemble, x)


@pytest.mark.parametrize("arch, head", [("resnet18", "fc"), ("mobilenet_v2", "classifier.1")])
def test_torchvision_models_pass_the_check(arch, head):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    models = [getattr(torchvision.models, arch)(num_classes=10) for _ in range(2)]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(2, num_intervals=5))
    assert ensemble.heads == (head, head)
    # mobilenet_v2's classifier is Dropout then Linear: the head is last. Eval mode compares
    # the split forward with the whole models without any dropout.
    ensemble.eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ensemble.member_outputs(x).logits, torch.stack([m(x) for m in models]))
    assert ensemble.train().member_outputs(x).logits.shape == (2, 2, 10)


# --- the quiet misuses ------------------------------------------------------------------------


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_one_model_k_times_is_refused_by_the_ensemble_and_the_penalties():
    model = mlp()
    x, y = images()
    with pytest.raises(ValueError, match=r"`models\[1\]` is `models\[0\]`.*\[model\] \* K.*separately"):
        Ensemble([model] * K)
    for penalty in (deg_penalty, gal_penalty):
        with pytest.raises(ValueError, match=r"`models\[2\]` is `models\[0\]`"):
            penalty([model, mlp(), model], x, y)


def test_members_sharing_parameters_warn():
    shared = body()
    models = [nn.Sequential(shared, nn.Linear(32, 10)) for _ in range(K)]
    with pytest.warns(UserWarning, match=r"`models\[1\]` shares its parameter '0\.0\.weight' with `models\[0\]`"):
        Ensemble(models)


def test_eval_mode_in_a_training_penalty_warns_and_measuring_does_not():
    x, y = images()
    ensemble = ensemble_of(mlp)
    for penalty in (deg_penalty, gal_penalty):
        with pytest.warns(UserWarning, match=r"models\[0\]` in eval mode.*\.train\(\).*create_graph=False"):
            penalty(ensemble.eval(), x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            penalty(ensemble.eval(), x, y, create_graph=False)
            penalty(ensemble.train(), x, y)
    # PDD alone left in eval mode (the members training) is the same silent loss of PDD.
    ensemble.train()
    ensemble.pdd.eval()
    with pytest.warns(UserWarning, match="the Ensemble's PDD in eval mode"):
        deg_penalty(ensemble, x, y)
    members = [mlp().eval(), mlp()]
    with pytest.warns(UserWarning, match=r"models\[0\]` in eval mode"):
        deg_penalty(members, x, y)


def test_float_labels_are_told_to_use_long():
    x, y = images()
    for models in ([mlp(), mlp()], ensemble_of(mlp)):
        with pytest.raises(TypeError, match=r"class indices \[B\] of an integer dtype.*float32.*y\.long\(\)"):
            deg_penalty(models, x, y.float())
    # Probabilities [B, L] stay accepted.
    probabilities = F.one_hot(y, 10).float()
    assert torch.isfinite(deg_penalty([mlp(), mlp()], x, probabilities).penalty)


def test_a_missing_batch_axis_is_named_not_blamed_on_y():
    x, y = images()
    one_image = x[0]  # [1, 8, 8]: C, H, W
    convs = [nn.Sequential(body(), nn.Linear(32, 10)) for _ in range(2)]
    for models in (convs, Ensemble(copy.deepcopy(convs), pdd=PriorityDiversifiedDropout(2, num_intervals=3))):
        for label in (y[:1], y[0]):
            with pytest.raises(ValueError, match=r"(`x` to have a batch axis|one label).*x\.unsqueeze\(0\)"):
                deg_penalty(models, one_image, label)
    with pytest.raises(ValueError, match=r"`x` to have a batch axis.*Conv2d.*\(1, 8, 8\).*x\.unsqueeze\(0\)"):
        Ensemble(copy.deepcopy(convs)).eval()(one_image)
    with pytest.raises(ValueError, match=r"`x` to have a batch axis.*Linear"):
        Ensemble([nn.Linear(64, 10), nn.Linear(64, 10)])(torch.rand(64))
    # A batch of 6 with 5 labels names the batch, and an unbatched x as one possibility.
    with pytest.raises(ValueError, match=r"one label per sample of `x` \(B = x\.shape\[0\] = 6\)"):
        deg_penalty(convs, x, y[:5])


# --- examples/evaluate.py without the evaluation extra ----------------------------------------


def test_evaluate_help_answers_without_the_evaluation_extra():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    blocked = "import sys, runpy; sys.modules['art'] = None; sys.argv = ['evaluate.py', *sys.argv[1:]]; runpy.run_path('examples/evaluate.py', run_name='__main__')"
    env = {"PYTHONPATH": f"{root / 'src'}:{root / 'examples'}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([sys.executable, "-c", blocked, "--help"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and shown.stdout.startswith("usage:")
    assert "pip install -e '.[evaluation]'" in " ".join(shown.stdout.split())
    used = subprocess.run([sys.executable, "-c", blocked, "runs/x"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert used.returncode == 2 and "evaluation extra" in used.stderr
