"""``ensemble_diversity.attacks.evaluate_robustness``: its bookkeeping on hand-built attacks and
models (which images each attack and restart sees, the worst case, the breakdown, the kept
images), the ensemble's own decision, modes, seeds, progress, and its refusal of bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ensemble_diversity import Ensemble
from ensemble_diversity.attacks import ATTACKS, Members, as_members, evaluate_robustness, pgd

pytestmark = pytest.mark.usefixtures("one_thread")


def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


# Images [4, 2]: pixel 0 is what the members read (class 1 once it exceeds 0.6, class 0 below),
# pixel 1 names the image (0.0, 0.1, 0.2, 0.3) so that a fake attack knows which it was handed.
IMAGES = torch.tensor([[0.5, 0.0], [0.5, 0.1], [0.5, 0.2], [0.5, 0.3]])
LABELS = torch.zeros(4, dtype=torch.long)
THRESHOLD_MODELS = [linear([[0, 0], [10, 0], [0, 0]], [0, -6, -10]) for _ in range(2)]


def ids(images: Tensor) -> list[int]:
    return [round(10 * float(v)) for v in images[:, 1]]


class Breaks:
    """A fake attack that pushes pixel 0 of the images it names to ``to`` and records the images it was handed per call."""

    def __init__(self, targets: set[int], to: float = 0.7) -> None:
        self.targets, self.to = targets, to
        self.calls: list[list[int]] = []

    def __call__(self, members: Members, images: Tensor, labels: Tensor, **settings) -> Tensor:
        self.calls.append(ids(images))
        out = images.clone()
        for row, image in enumerate(ids(images)):
            if image in self.targets:
                out[row, 0] = self.to
        return out


def test_the_worst_case_over_two_attacks_in_sequence():
    """A breaks images 1-2, B would break 2-3: B sees only 0 and 3, breaks 3; image 0 alone survives."""
    a, b = Breaks({1, 2}), Breaks({2, 3})
    result = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.2, attacks={"A": a, "B": b})
    assert a.calls == [[0, 1, 2, 3]] and b.calls == [[0, 3]]
    assert result.broken[0].tolist() == [[False, True, True, False], [False, False, False, True]]
    assert result.robust[0].tolist() == [True, False, False, False]
    assert result.accuracy.tolist() == [0.25] and result.clean_accuracy == 1.0
    assert result.cumulative_accuracy().tolist() == [[0.5, 0.25]]
    assert result.attacks == ("A", "B") and result.eps == (0.2,)


def test_the_worst_case_over_two_attacks_run_apart_and_the_first_image_kept():
    a, b = Breaks({1, 2}, to=0.7), Breaks({2, 3}, to=0.8)
    result = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.4, attacks={"A": a, "B": b}, sequential=False, keep_adversarial=True)
    assert b.calls == [[0, 1, 2, 3]]
    assert result.broken[0].tolist() == [[False, True, True, False], [False, False, True, True]]
    assert result.robust[0].tolist() == [True, False, False, False]
    # Image 2 fell to both: A's image is kept (the first attack); image 0 is returned clean.
    assert result.adversarial[0, :, 0].tolist() == pytest.approx([0.5, 0.7, 0.7, 0.8])
    assert torch.equal(result.adversarial[0, :, 1], IMAGES[:, 1])


class BreaksOnePerRestart:
    """Restart r (its r-th call) breaks image r, if it was handed image r."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, members: Members, images: Tensor, labels: Tensor, **settings) -> Tensor:
        restart = len(self.calls)
        self.calls.append(ids(images))
        out = images.clone()
        out[[row for row, image in enumerate(ids(images)) if image == restart], 0] = 0.7
        return out


def test_each_restart_attacks_only_what_earlier_restarts_failed_on_and_every_one_counts():
    attack = BreaksOnePerRestart()
    result = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.2, attacks={"C": attack}, restarts=3)
    assert attack.calls == [[0, 1, 2, 3], [1, 2, 3], [2, 3]]
    assert result.robust[0].tolist() == [False, False, False, True]


def test_batches_change_nothing_but_the_calls():
    a = Breaks({1, 2})
    whole = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.2, attacks={"A": a})
    one_by_one = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.2, attacks={"A": a}, batch_size=1)
    assert torch.equal(whole.broken, one_by_one.broken) and a.calls[1:] == [[0], [1], [2], [3]]


def test_eps_zero_is_the_clean_accuracy_and_attacks_nothing():
    a = Breaks({1, 2})
    result = evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=[0.0, 0.2], attacks={"A": a})
    assert a.calls == [[0, 1, 2, 3]]  # at eps 0.2 only
    assert result.accuracy.tolist() == [1.0, 0.5]


def test_an_image_the_ensemble_already_misclassifies_is_never_attacked():
    a = Breaks({1, 2})
    labels = torch.tensor([0, 0, 2, 0])
    result = evaluate_robustness(THRESHOLD_MODELS, IMAGES, labels, eps=0.2, attacks={"A": a})
    assert a.calls == [[0, 1, 3]] and result.robust[0].tolist() == [True, False, False, True]


# -- the ensemble's own decision ---------------------------------------------------------------

# The worked example of issue 21: members' logits [0, 40 x0, 0], [5, 0, 0], [5, 0, 0] at x0 = 0.5:
# the averaged logits say class 1, the averaged probabilities [0.658, 0.338, 0.004] class 0.
DISAGREEING = [linear([[0, 0], [40, 0], [0, 0]], [0, 0, 0]), linear([[0, 0]] * 3, [5, 0, 0]), linear([[0, 0]] * 3, [5, 0, 0])]


def test_the_decision_is_the_averaged_probabilities_where_the_averaged_logits_disagree():
    images = IMAGES[:1]
    with torch.no_grad():
        logits = torch.stack([m(images) for m in DISAGREEING])
    assert logits.mean(dim=0).argmax().item() == 1 and torch.softmax(logits, dim=-1).mean(dim=0).argmax().item() == 0
    # No point of the box fools the probabilities (members 2 and 3 hold 2/3 x 0.987 of class 0), so
    # every attack, whatever it climbs, leaves the image robust; an attack "fooling" the logits does not count.
    fools_the_logits = Breaks({0}, to=0.9)
    result = evaluate_robustness(DISAGREEING, images, LABELS[:1], eps=0.4, attacks={**ATTACKS, "logits-only": fools_the_logits}, steps=5)
    assert result.accuracy.tolist() == [1.0] and fools_the_logits.calls == [[0]]
    # Averaged logits decide only where asked for, or where the Ensemble averages logits.
    assert evaluate_robustness(DISAGREEING, images, LABELS[:1], eps=0.0, combine="logits").clean_accuracy == 0.0
    assert evaluate_robustness(Ensemble(DISAGREEING, combine="logits"), images, LABELS[:1], eps=0.0).clean_accuracy == 0.0


def test_a_function_of_the_members_logits_is_attacked_like_the_list_of_models():
    models = THRESHOLD_MODELS

    def member_logits(x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in models])

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 2, generator=generator) * 0.6
    labels = torch.zeros(16, dtype=torch.long)
    from_list = evaluate_robustness(models, images, labels, eps=[0.1, 0.2], steps=5, keep_adversarial=True)
    from_function = evaluate_robustness(member_logits, images, labels, eps=[0.1, 0.2], steps=5, keep_adversarial=True)
    assert torch.equal(from_list.broken, from_function.broken) and torch.equal(from_list.adversarial, from_function.adversarial)
    assert 0 < from_list.robust.sum() < 32


class ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return self.head(self.dropout(x.flatten(1)))


@pytest.mark.parametrize("wrap", [list, Ensemble], ids=["list", "Ensemble"])
def test_the_members_run_in_eval_mode_and_get_their_modes_back(wrap):
    models = [ModeRecorder(), ModeRecorder()]
    models[1].dropout.eval()
    model = wrap(models)
    model.train() if isinstance(model, nn.Module) else None
    models[1].dropout.eval()
    evaluate_robustness(model, torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,)), eps=0.1, steps=3)
    assert all(mode is False for m in models for mode in m.modes) and models[0].modes
    assert models[0].training and models[0].dropout.training and models[1].training and not models[1].dropout.training


def test_the_seed_decides_the_random_starts_and_progress_is_reported():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Flatten(), nn.Linear(16, 4)) for _ in range(3)]
    images, labels = torch.rand(32, 1, 4, 4), torch.randint(0, 4, (32,))
    reports: list[tuple[int, int, str]] = []
    first = evaluate_robustness(models, images, labels, eps=[0.05, 0.1], attacks=["pgd", "apgd-dlr"], steps=5, restarts=2, keep_adversarial=True,
                                progress=lambda done, total, text: reports.append((done, total, text)))
    again = evaluate_robustness(models, images, labels, eps=[0.05, 0.1], attacks=["pgd", "apgd-dlr"], steps=5, restarts=2, keep_adversarial=True)
    other = evaluate_robustness(models, images, labels, eps=[0.05, 0.1], attacks=["pgd", "apgd-dlr"], steps=5, restarts=2, keep_adversarial=True, seed=1)
    assert torch.equal(first.adversarial, again.adversarial) and torch.equal(first.broken, again.broken)
    assert not torch.equal(first.adversarial, other.adversarial)
    assert [(done, total) for done, total, _ in reports] == [(done, 8) for done in range(1, 9)]
    assert reports[0][2].startswith("eps 0.05, pgd, restart 1/2: ") and reports[-1][2].startswith("eps 0.1, apgd-dlr, restart 2/2: ")
    assert first.summary().splitlines()[1].split() == ["eps", "pgd", "+apgd-dlr", "worst", "case"]


def test_the_attacks_run_on_the_device_of_the_images_and_accept_a_members_object():
    members = as_members(THRESHOLD_MODELS)
    assert as_members(members) is members
    adversarial = pgd(members, IMAGES, LABELS, eps=0.2, steps=5, generator=torch.Generator().manual_seed(0))
    assert adversarial.device == IMAGES.device and (adversarial[:, 0] > 0.6).all()


# -- bad input ---------------------------------------------------------------------------------


def models_and_batch() -> tuple[list[nn.Module], Tensor, Tensor]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(2)], torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"eps": -0.1}, "`eps` to be a number in \\[0, 1\\]"),
        ({"eps": math.nan}, "`eps`"),
        ({"eps": 1.5}, "`eps` to be a number in \\[0, 1\\]"),
        ({"eps": 2.5, "norm": "2"}, "`eps` to be a number in \\[0, 2\\]"),
        ({"eps": []}, "non-empty"),
        ({"eps": 0.1, "norm": "1"}, "`norm`"),
        ({"eps": 0.1, "box": (1.0, 0.0)}, "`box`"),
        ({"eps": 0.1, "steps": 0}, "`steps` to be a positive integer, but got 0"),
        ({"eps": 0.1, "restarts": 0}, "`restarts`"),
        ({"eps": 0.1, "batch_size": 2.5}, "`batch_size`"),
        ({"eps": 0.1, "attacks": ["pgd", "fab"]}, "\\['fab'\\]"),
        ({"eps": 0.1, "attacks": ["pgd", "pgd"]}, "each once"),
        ({"eps": 0.1, "attacks": []}, "at least one"),
        ({"eps": 0.1, "num_members": 3}, "`num_members` to match the 2 models"),
        ({"eps": 0.1, "combine": "votes"}, "`combine`"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(settings, message):
    models, images, labels = models_and_batch()
    with pytest.raises(ValueError, match=message):
        evaluate_robustness(models, images, labels, **settings)


def test_images_outside_the_box_are_refused_and_another_box_is_accepted():
    models, images, labels = models_and_batch()
    with pytest.raises(ValueError, match="`images` to lie in the box \\(0.0, 1.0\\).*from -0.468"):
        evaluate_robustness(models, images - 0.5, labels, eps=0.1)
    result = evaluate_robustness(models, images - 0.5, labels, eps=0.1, box=(-0.5, 0.5), steps=3, keep_adversarial=True)
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5


@pytest.mark.parametrize(
    "labels, error, message",
    [
        (torch.tensor([0, 1, 2, 3, 0]), ValueError, "`labels` to hold class indices in \\[0, 3\\), but got values from 0 to 3"),
        (torch.tensor([0, -1, 2, 1, 0]), ValueError, "class indices in \\[0, 3\\)"),
        (torch.tensor([0.0, 1, 2, 1, 0]), TypeError, "integer dtype"),
        (torch.tensor([0, 1, 2]), ValueError, "`labels` to have shape \\[5\\]"),
    ],
)
def test_bad_labels_are_refused(labels, error, message):
    models, images, _ = models_and_batch()
    with pytest.raises(error, match=message):
        evaluate_robustness(models, images, labels, eps=0.1)


def test_member_count_and_layout_mismatches_are_refused():
    models, images, labels = models_and_batch()

    def one_model(x: Tensor) -> Tensor:
        return models[0](x)

    def batch_first(x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in models], dim=1)

    calls = []

    def changing(x: Tensor) -> Tensor:
        calls.append(1)
        return torch.stack([m(x) for m in models[: 1 + len(calls) % 2]])

    with pytest.raises(ValueError, match="one model's logits \\[B, L\\]"):
        evaluate_robustness(one_model, images, labels, eps=0.1)
    with pytest.raises(ValueError, match="if it is \\[B, K, L\\], return logits.transpose\\(0, 1\\)"):
        evaluate_robustness(batch_first, images, labels, eps=0.1)
    with pytest.raises(ValueError, match="K=2 members and L=3 classes on every call"):
        evaluate_robustness(changing, images, labels, eps=0.1, steps=3)
    with pytest.raises(ValueError, match="`num_members` to match the Ensemble's K=2, but got 3"):
        evaluate_robustness(Ensemble(models), images, labels, eps=0.1, num_members=3)
    with pytest.raises(ValueError, match="K=3 members"):
        evaluate_robustness(lambda x: torch.stack([m(x) for m in models]), images, labels, eps=0.1, num_members=3)
    with pytest.raises(TypeError, match="sequence of \\['Sequential', 'str'\\]"):
        evaluate_robustness([models[0], "model"], images, labels, eps=0.1)


def test_an_attack_leaving_the_ball_or_the_box_is_refused_by_name():
    def too_far(members, images, labels, *, eps, **settings):
        return (images + 2 * eps).clamp(0, 1)

    with pytest.raises(ValueError, match="attack 'too-far' to return images within the L_inf ball of radius 0.1"):
        evaluate_robustness(THRESHOLD_MODELS, IMAGES, LABELS, eps=0.1, attacks={"too-far": too_far})


def test_labels_on_another_device_than_the_images_are_refused():
    models, images, _ = models_and_batch()
    with pytest.raises(ValueError, match="`labels` on the device of `images` \\(cpu\\), but it is on meta"):
        evaluate_robustness(models, images, torch.zeros(5, dtype=torch.long, device="meta"), eps=0.1)
