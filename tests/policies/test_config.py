"""A broken config is refused with the file, the field and the reason."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.config import ConfigError, load_config


def test_embedded_defaults() -> None:
    config = load_config()
    assert config.node.ae_title == "PACS_EDGE"
    assert config.dicom.port == 11112
    assert config.http.port == 9112
    assert config.dicom.max_pdu == 256 * 1024
    assert config.storage.durability == "fsync"
    assert config.durable
    assert config.storage.on_duplicate == "replace"
    assert config.dicom.allowed_calling_aes == []
    assert str(config.node.data_dir) == "var"


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[dicom]\nport = 104\n[storage]\nindex_map_size = "2GiB"\n')
    config = load_config(path, {"dicom": {"port": 11113}})
    assert config.dicom.port == 11113
    assert config.storage.index_map_size == 2 * 2**30
    assert config.dicom.max_pdu == 256 * 1024  # untouched defaults stay


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[dicom]\nport = 70000\n", "dicom.port: Input should be less than or equal to 65535"),
        ('[node]\nae_title = "MUCH_TOO_LONG_TITLE"\n', "node.ae_title: an AE title is 1-16"),
        ("[dicom]\nmax_pdus = 1\n", "dicom.max_pdus: unknown key"),
        ('[storage]\ndurability = "maybe"\n', "storage.durability: Input should be 'fsync' or"),
        ('[storage]\nindex_map_size = "lots"\n', "storage.index_map_size: a size is a number"),
        ('[dicom]\nallowed_calling_aes = ["OK", "BAD\\\\AE"]\n', "dicom.allowed_calling_aes.1"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[dicom\nport = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_serve_refuses_a_broken_config_readably(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[dicom]\nport = 0\n")
    result = run_cli("serve", "--config", str(path), timeout=60)
    assert result.returncode == 2
    assert "dicom.port: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


CENTRAL = (
    '[[destination]]\nname = "central"\nkind = "dicom"\nhost = "10.0.0.5"\nport = 104\n'
    'called_ae = "CENTRAL"\n'
)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            CENTRAL + '[[route]]\nname = "mammo"\ndestinations = ["central"]\n'
            'match = { Modalty = "MG" }\n',
            "route[0] \"mammo\".match.Modalty: 'Modalty' is not a DICOM keyword",
        ),
        (
            CENTRAL + '[[route]]\nname = "ct"\ndestinations = ["centrl"]\n',
            "route 'ct': destinations ['centrl'] are not defined (defined: ['central'])",
        ),
        (
            CENTRAL + '[[route]]\nname = "re"\ndestinations = ["*"]\n'
            'match = { StationName = { regex = "CT[" } }\n',
            'route[0] "re".match.StationName.regex: not a valid regular expression',
        ),
        (
            CENTRAL + '[[route]]\nname = "uid"\ndestinations = ["*"]\n'
            'coerce = { set = { SOPInstanceUID = "1.2.3" } }\n',
            "SOPInstanceUID cannot be coerced: the DIMSE command carries it",
        ),
        (
            CENTRAL + '[[destination]]\nname = "cloud"\nkind = "dicomweb"\nurl = "ftp://x"\n',
            'destination[1] "cloud".url: String should match pattern',
        ),
        (CENTRAL + CENTRAL, "destination name 'central' is used twice"),
        (
            CENTRAL.replace('kind = "dicom"', 'kind = "dimse"'),
            "destination[0] \"central\".kind: needs kind = one of 'dicom', 'dicomweb'",
        ),
        (
            CENTRAL.replace('kind = "dicom"\n', ""),
            "destination[0] \"central\".kind: needs kind = one of 'dicom', 'dicomweb'",
        ),
        (
            CENTRAL + 'transfer_syntax = "jpeg2000-lossless"\n',
            "destination[0] \"central\".transfer_syntax: Input should be 'as-stored', "
            "'as-stored-or-uncompressed', 'jpeg-ls-lossless', 'htj2k-lossless' or "
            "'uncompressed'",
        ),
    ],
)
def test_bad_destinations_and_routes_name_the_rule(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value), str(caught.value)
    assert "Input should be a valid string" not in str(caught.value)


def test_routes_compile_and_route(tmp_path: Path) -> None:
    from policies.rules import Router

    path = tmp_path / "routes.toml"
    path.write_text(
        CENTRAL.replace("central", "a")
        + CENTRAL.replace("central", "b")
        + '[[route]]\nname = "ct1"\ndestinations = ["a"]\nmatch = { calling_ae = "CT1" }\n'
        '[[route]]\nname = "mg"\ndestinations = ["a", "b"]\npriority = "high"\n'
        'match = { Modality = { glob = "M?" }, InstitutionName = { present = true } }\n'
        '[[route]]\nname = "local"\ndestinations = []\nmatch = { Modality = { regex = "^US" } }\n'
    )
    config = load_config(path)
    router = Router(config.route, [d.name for d in config.destination])
    assert router.keywords == {"calling_ae", "Modality", "InstitutionName"}

    def names(**attrs: str) -> list[tuple[str, int]]:
        return [(r.destination, r.priority) for r in router.route(attrs)]

    assert names(calling_ae="CT1", Modality="MG") == [("a", 1)]  # first match wins
    assert names(calling_ae="X", Modality="MG", InstitutionName="H") == [("a", 0), ("b", 0)]
    assert names(calling_ae="X", Modality="MG") == [("a", 1), ("b", 1)]  # default: all
    assert names(calling_ae="X", Modality="US") == []  # kept local
    assert Router([], ["a", "b"]).route({}) == Router([], ["a", "b"]).route({"x": "y"})


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[lifecycle]\nlow_watermark = 0.9\n",
            "lifecycle: low_watermark 0.9 must be below high_watermark 0.85",
        ),
        (
            "[lifecycle]\nhigh_watermark = 0.97\n",
            "lifecycle.high_watermark 0.97 must be below storage.disk_high_watermark 0.95",
        ),
        ('[lifecycle]\nwindow = "22:00-6:00"\n', 'lifecycle.window: a window is "HH:MM-HH:MM"'),
        (
            '[[lifecycle.rule]]\nname = "x"\nmatch = { StationName = "A" }\n',
            "lifecycle.rule[0] \"x\".match.StationName: 'StationName' cannot be matched here",
        ),
        (
            '[[lifecycle.rule]]\nname = "ct"\nwarm_codec = "htj2k"\n',
            "lifecycle.rule[0] \"ct\".warm_codec: Input should be 'none', 'zstd' or 'jpeg-ls'",
        ),
    ],
)
def test_bad_lifecycle_settings_name_the_field(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)
