"""One render-settings object, validated once; the command line and the studio share its limits."""
import pytest

from app.errors import StudioInputError, check_render
from brivl.cli import main
from brivl.errors import UserInputError
from brivl.viz.settings import LIMITS, STUDIO_LIMITS, RenderSettings


def test_the_studio_limits_are_the_command_lines_narrowed():
    assert set(STUDIO_LIMITS) == set(LIMITS)
    for name, (lo, hi) in STUDIO_LIMITS.items():
        assert LIMITS[name][0] <= lo <= hi <= LIMITS[name][1], name


def test_checked_converts_numbers_and_names_the_setting_and_its_range():
    s = RenderSettings.checked(steps="8", size=64.0, seed=3, lr="0.1")
    assert (s.steps, s.size, s.seed, s.lr) == (8, 64, 3, 0.1) and s.kwargs()["param"] == "fft"
    with pytest.raises(UserInputError, match=r"--size must be at least 16 pixels \(at most 4096\), got 8"):
        RenderSettings.checked(LIMITS, prefix="--", size=8)
    with pytest.raises(UserInputError, match=r"size must be between 16 and 4096 pixels, got 5000"):
        RenderSettings.checked(size=5000)
    with pytest.raises(UserInputError, match=r"lr must be in \(0, 10\]"):
        RenderSettings.checked(lr=0)
    with pytest.raises(UserInputError, match="steps must be a whole number"):
        RenderSettings.checked(steps=2.5)
    with pytest.raises(StudioInputError, match="size must be between 32 and 512 pixels"):
        check_render(8, 1024, 0)
    with pytest.raises(StudioInputError, match="steps must be a number"):
        check_render("many", 64, 0)


def test_the_command_line_refuses_what_the_limits_refuse(capsys):
    assert main(["imagine", "tiny", "a sea", "--size", "5000", "--steps", "1"]) == 2
    assert "--size must be between 16 and 4096 pixels" in capsys.readouterr().err
    assert main(["neuron", "tiny", "--channel", "0", "--seed", "-1", "--steps", "1"]) == 2
    assert "--seed must be at least 0" in capsys.readouterr().err
