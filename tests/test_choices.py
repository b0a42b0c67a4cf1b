import subprocess
import sys

from ddcs_core import choices
from ddcs_core.__main__ import build_parser
from ddcs_core.evaluate import PROFILES, EvalConfig
from ddcs_core.perceptual.weights import BACKBONE_FILES


def test_the_engines_tables_have_exactly_the_offered_names():
    assert tuple(PROFILES) == choices.PROFILES
    assert tuple(BACKBONE_FILES) == choices.LPIPS_NETS
    for profile in choices.PROFILES:
        for features in choices.FEATURES[:-1]:
            for prdc_mode in choices.PRDC_MODES:
                EvalConfig(profile=profile, features=features, prdc_mode=prdc_mode)


def test_the_cli_offers_the_same_names():
    parser = build_parser()
    for profile in choices.PROFILES:
        for resize in choices.RESIZE_POLICIES:
            args = parser.parse_args(["evaluate", "--targets", "t", "--recon", "r", "--out", "o", "--profile", profile,
                                      "--resize", resize, "--net", choices.LPIPS_NETS[-1]])
            assert (args.profile, args.resize) == (profile, resize)


def test_the_cli_reads_the_names_without_loading_torch():
    code = "import sys, ddcs_core.__main__ as m; m.build_parser(); print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
