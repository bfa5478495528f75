"""Tests for nommer.conf.loader: loading, validating and mapping nomconf settings."""

import os
import re
import sys
import textwrap

import pytest

from nommer.conf import ConfigErrors, Settings, defaults, load_settings, redacted
from nommer.conf.compat import OBSOLETE, RENAMED

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO_ROOT, "nomconf.example.py")
DEFAULT_NAMES = {n for n in dir(defaults) if n.isupper() and not n.startswith("_")}


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(excinfo):
    return excinfo.value.errors


# --- where the settings come from ------------------------------------------------

def test_no_config_gives_defaults(tmp_path):
    """Without a config every setting has its default, paths resolved against cwd."""
    s = load_settings(cwd=str(tmp_path))
    for name in DEFAULT_NAMES - {"DATA_DIR", "SCRATCH_DIR", "FILE_STORAGE_ROOTS"}:
        assert getattr(s, name) == getattr(defaults, name), name
    assert set(s.as_dict()) == DEFAULT_NAMES
    assert s.DATA_DIR == os.path.join(str(tmp_path), defaults.DATA_DIR)
    assert s.SCRATCH_DIR == os.path.join(s.DATA_DIR, "scratch")
    assert s.FILE_STORAGE_ROOTS == [os.path.join(os.path.realpath(str(tmp_path)), "media")]
    assert s.config_path is None
    assert s.warnings == [] and s.notes == []


def test_default_module_name_missing_means_defaults(tmp_path, monkeypatch):
    """The default name "nomconf" may be absent: then the defaults apply, no error."""
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nothing-here")])
    s = load_settings("nomconf", cwd=str(tmp_path))
    assert s.config_path is None
    assert s.API_PORT == defaults.API_PORT


def test_default_module_name_found_in_cwd(tmp_path):
    """A nomconf.py in cwd is found by the module name "nomconf"."""
    path = write(tmp_path, "nomconf.py", "API_PORT = 9123\n")
    s = load_settings("nomconf", cwd=str(tmp_path))
    assert s.API_PORT == 9123
    assert s.config_path == path


def test_dotted_module_name_on_sys_path(tmp_path, monkeypatch):
    """A dotted module name is found on sys.path without importing it into sys.modules."""
    write(tmp_path, "site/myproj/__init__.py", "")
    write(tmp_path, "site/myproj/settings.py", "MAX_NUM_WORKERS = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    s = load_settings("myproj.settings", cwd=str(tmp_path))
    assert s.MAX_NUM_WORKERS == 7
    assert s.config_path == str(tmp_path / "site" / "myproj" / "settings.py")
    assert "myproj.settings" not in sys.modules


def test_missing_module_name_other_than_default_is_error(tmp_path):
    """A module name that is not the default and cannot be found is an error."""
    with pytest.raises(ConfigErrors) as e:
        load_settings("no_such_conf_module_xyz", cwd=str(tmp_path))
    assert "no_such_conf_module_xyz" in str(e.value)
    assert "could not be found" in errors_of(e)[0]


def test_nonexistent_explicit_path_is_error(tmp_path):
    """An explicitly given config path that does not exist is an error naming it."""
    with pytest.raises(ConfigErrors) as e:
        load_settings("conf/missing.py", cwd=str(tmp_path))
    assert errors_of(e) == [f"config file {tmp_path / 'conf' / 'missing.py'} does not exist"]


def test_file_overrides_several_names(tmp_path):
    """A config file overrides several settings; lower-case and _-prefixed names are ignored."""
    path = write(tmp_path, "my.py", """\
        import os
        _base = "media"
        _PRIVATE = 1
        helper = 42
        API_PORT = 9000
        DATA_DIR = "var/" + _base
        SCRATCH_DIR = "/tmp/scratch"
        MAX_NUM_WORKERS = 2
        JOB_LEASE_S = 90
        STORAGE_BACKENDS = {"file": "nommer.core.storage.file.FileStorage"}
        """)
    s = load_settings("my.py", cwd=str(tmp_path))
    assert s.API_PORT == 9000
    assert s.DATA_DIR == str(tmp_path / "var" / "media")
    assert s.SCRATCH_DIR == "/tmp/scratch"
    assert s.MAX_NUM_WORKERS == 2
    assert s.JOB_LEASE_S == 90.0 and isinstance(s.JOB_LEASE_S, float)
    assert s.STORAGE_BACKENDS == {"file": "nommer.core.storage.file.FileStorage"}
    assert s.HEARTBEAT_INTERVAL_S == defaults.HEARTBEAT_INTERVAL_S
    assert s.config_path == path
    assert s.warnings == []


def test_overrides_win_over_the_config_file(tmp_path):
    """overrides are applied on top of the config module."""
    write(tmp_path, "nomconf.py", "API_PORT = 9000\nMAX_NUM_WORKERS = 3\n")
    s = load_settings("nomconf", overrides={"API_PORT": 9001}, cwd=str(tmp_path))
    assert (s.API_PORT, s.MAX_NUM_WORKERS) == (9001, 3)


def test_config_file_is_read_afresh_each_time(tmp_path):
    """Loading twice re-reads the file (no module cache)."""
    write(tmp_path, "c.py", "API_PORT = 9000\n")
    assert load_settings("c.py", cwd=str(tmp_path)).API_PORT == 9000
    write(tmp_path, "c.py", "API_PORT = 9002\n")
    assert load_settings("c.py", cwd=str(tmp_path)).API_PORT == 9002


def test_config_that_raises_reports_file_and_line(tmp_path):
    """A config whose code raises is reported with its file, line and exception."""
    path = write(tmp_path, "bad.py", "API_PORT = 9000\n\nx = 1 / 0\n")
    with pytest.raises(ConfigErrors) as e:
        load_settings(path)
    assert errors_of(e) == [f"{path}, line 3: running it raised ZeroDivisionError: division by zero"]


def test_config_with_syntax_error_reports_line(tmp_path):
    """A config with a syntax error is reported with its line."""
    path = write(tmp_path, "bad.py", "API_PORT = 9000\nMAX_NUM_WORKERS = = 2\n")
    with pytest.raises(ConfigErrors) as e:
        load_settings(path)
    assert errors_of(e)[0].startswith(f"{path}, line 2: syntax error")


# --- validation ---------------------------------------------------------------------

def test_unknown_name_suggests_close_match(tmp_path):
    """An unknown name is an error with a did-you-mean suggestion."""
    write(tmp_path, "nomconf.py", "MAX_NUM_WORKER = 4\n")
    with pytest.raises(ConfigErrors) as e:
        load_settings("nomconf", cwd=str(tmp_path))
    assert errors_of(e) == ["MAX_NUM_WORKER: unknown setting; did you mean MAX_NUM_WORKERS?"]


def test_unknown_name_close_to_original_name_suggests_it(tmp_path):
    """A misspelt original name is suggested together with its new name."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(NOMMERD_MAX_INACTIVTY=60)
    assert "did you mean NOMMERD_MAX_INACTIVITY (now WORKER_MAX_IDLE_S)?" in errors_of(e)[0]


def test_unknown_name_without_close_match_has_no_suggestion(tmp_path):
    """An unknown name with nothing close is an error without a suggestion."""
    write(tmp_path, "nomconf.py", "BASE_DIRECTORY = '/srv'\n")
    with pytest.raises(ConfigErrors) as e:
        load_settings("nomconf", cwd=str(tmp_path))
    (error,) = errors_of(e)
    assert error.startswith("BASE_DIRECTORY: unknown setting")
    assert "did you mean" not in error and "lower case" in error


def test_all_errors_are_reported_together(tmp_path):
    """Several problems end in one ConfigErrors listing each, one per line."""
    path = write(tmp_path, "nomconf.py", """\
        MAX_NUM_WORKER = 4
        API_PORT = "8001"
        JOB_LEASE_S = -1
        JOB_STORE_BACKEND = "postgres"
        WORKER_TERMINATE_WHEN_IDLE = "yes"
        """)
    with pytest.raises(ConfigErrors) as e:
        load_settings(path)
    errs = errors_of(e)
    assert len(errs) == 5
    text = str(e.value)
    lines = text.splitlines()
    assert lines[0] == f"5 problems with the settings in {path}:"
    for err in errs:
        assert f"  {err}" in lines
    assert any("MAX_NUM_WORKER:" in x for x in errs)
    assert "API_PORT = '8001': expected an integer from 1 to 65535" in errs
    assert "JOB_LEASE_S = -1: expected a number of seconds > 0" in errs
    assert "JOB_STORE_BACKEND = 'postgres': expected one of 'sqlite', 'dynamodb', 'simpledb'" in errs
    assert "WORKER_TERMINATE_WHEN_IDLE = 'yes': expected True or False" in errs


@pytest.mark.parametrize("name, value, expected", [
    ("API_PORT", 0, "expected an integer from 1 to 65535"),
    ("API_PORT", 65536, "expected an integer from 1 to 65535"),
    ("API_PORT", True, "expected an integer from 1 to 65535"),
    ("API_PORT", 8001.0, "expected an integer from 1 to 65535"),
    ("MAX_NUM_WORKERS", 0, "expected an integer >= 1"),
    ("MAX_JOB_ATTEMPTS", 0, "expected an integer >= 1"),
    ("JOB_OVERFLOW_THRESH", -1, "expected an integer >= 0"),
    ("JOB_LEASE_S", 0, "expected a number of seconds > 0"),
    ("JOB_LEASE_S", True, "expected a number of seconds > 0"),
    ("JOB_LEASE_S", float("nan"), "expected a number of seconds > 0"),
    ("JOB_LEASE_S", "60", "expected a number of seconds > 0"),
    ("QUEUE_WAIT_TIME_S", 21, "expected a number of seconds > 0 and <= 20"),
    ("RETRY_BACKOFF_S", -1, "expected a number of seconds >= 0"),
    ("WORKER_TERMINATE_WHEN_IDLE", 1, "expected True or False"),
    ("NEW_JOB_QUEUE_NAME", "has space", "expected a queue name"),
    ("EC2_SECURITY_GROUPS", "default", "expected a list of security group names"),
    ("EC2_INSTANCE_TYPES", [], "expected a non-empty list of instance types"),
    ("AWS_ENDPOINT_URL", "localhost:5000", "expected None or an http:// or https:// URL"),
    ("FLEET_BACKEND", "kubernetes", "expected one of 'local', 'ec2', 'none'"),
    ("SCRATCH_DIR", 5, "expected None or a path"),
    ("NOMMER_ALIASES", ["x"], "expected a dict"),
])
def test_bad_type_or_value_names_setting_value_and_expectation(name, value, expected):
    """A wrong type or out-of-range value is an error naming the setting, value and expectation."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(**{name: value})
    (error,) = errors_of(e)
    assert error.startswith(f"{name} = {value!r} (in overrides): "), error
    assert expected in error


def test_bad_list_items_are_each_reported():
    """Every bad item of a list setting is reported with its index."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(ALLOWED_NOMMERS=["nommer.x.Ok", "not dotted", 3])
    errs = errors_of(e)
    assert len(errs) == 2
    assert errs[0].startswith("ALLOWED_NOMMERS[1] = 'not dotted'")
    assert errs[1].startswith("ALLOWED_NOMMERS[2] = 3")


def test_ints_accepted_where_floats_expected():
    """An int given for a seconds setting is accepted and stored as a float."""
    s = Settings.from_overrides(JOB_LEASE_S=120, HEARTBEAT_INTERVAL_S=5)
    assert s.JOB_LEASE_S == 120.0 and type(s.JOB_LEASE_S) is float
    assert type(s.HEARTBEAT_INTERVAL_S) is float


def test_ec2_fleet_needs_an_ami_and_shared_backends():
    """FLEET_BACKEND = 'ec2' with the embedded defaults: each missing piece named."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(FLEET_BACKEND="ec2")
    errors = errors_of(e)
    assert len(errors) == 3
    assert any("needs EC2_AMI_ID" in x for x in errors)
    assert any("needs WORK_QUEUE_BACKEND = 'sqs'" in x for x in errors)
    assert any("needs JOB_STORE_BACKEND = 'dynamodb' or 'simpledb'" in x for x in errors)
    s = Settings.from_overrides(FLEET_BACKEND="ec2", EC2_AMI_ID="ami-0123456789abcdef0",
                                WORK_QUEUE_BACKEND="sqs", JOB_STORE_BACKEND="dynamodb")
    assert s.FLEET_BACKEND == "ec2"


@pytest.mark.parametrize("name, value, fragment", [
    ("EC2_SUBNET_IDS", ["net-1"], "subnet id"),
    ("EC2_SECURITY_GROUP_IDS", ["default"], "security group id"),
    ("EC2_MARKET", "reserved", "'spot' or 'on-demand'"),
    ("SPOT_MAX_PRICE", 0.05, "as a string"),
    ("EC2_METADATA_URL", "169.254.169.254", "URL"),
])
def test_ec2_settings_checked(name, value, fragment):
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(**{name: value})
    (error,) = errors_of(e)
    assert name in error and fragment in error


def test_available_backends_are_accepted():
    """The backends that exist are accepted by name."""
    s = Settings.from_overrides(JOB_STORE_BACKEND="sqlite", WORK_QUEUE_BACKEND="local",
                                FLEET_BACKEND="none")
    assert (s.JOB_STORE_BACKEND, s.WORK_QUEUE_BACKEND, s.FLEET_BACKEND) == ("sqlite", "local", "none")


def test_heartbeat_must_be_at_most_a_third_of_the_lease():
    """HEARTBEAT_INTERVAL_S above JOB_LEASE_S/3 is an error; exactly a third is fine."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(JOB_LEASE_S=60, HEARTBEAT_INTERVAL_S=21)
    (error,) = errors_of(e)
    assert error.startswith("HEARTBEAT_INTERVAL_S = 21 (in overrides) is more than a third of "
                            "JOB_LEASE_S = 60 (in overrides)")
    assert "HEARTBEAT_INTERVAL_S <= 20 or JOB_LEASE_S >= 63" in error
    assert Settings.from_overrides(JOB_LEASE_S=60, HEARTBEAT_INTERVAL_S=20).HEARTBEAT_INTERVAL_S == 20.0


def test_cross_field_check_skipped_when_a_field_is_invalid():
    """A setting that is invalid alone is not reported again by the cross-field check."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(JOB_LEASE_S="long", HEARTBEAT_INTERVAL_S=30)
    assert len(errors_of(e)) == 1


def test_abandon_threshold_must_exceed_heartbeat():
    """ABANDON_INACTIVE_JOBS_S not above HEARTBEAT_INTERVAL_S is an error."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(ABANDON_INACTIVE_JOBS_S=10)
    assert "healthy jobs would be abandoned" in errors_of(e)[0]


def test_file_storage_roots_resolved_and_checked(tmp_path):
    """FILE_STORAGE_ROOTS entries become real absolute paths; missing ones are errors."""
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    s = load_settings(overrides={"FILE_STORAGE_ROOTS": ["link", str(tmp_path)]}, cwd=str(tmp_path))
    assert s.FILE_STORAGE_ROOTS == [os.path.realpath(tmp_path / "real"), os.path.realpath(tmp_path)]
    with pytest.raises(ConfigErrors) as e:
        load_settings(overrides={"FILE_STORAGE_ROOTS": ["missing"]}, cwd=str(tmp_path))
    assert "FILE_STORAGE_ROOTS[0] = 'missing'" in errors_of(e)[0]
    assert "expected an existing directory" in errors_of(e)[0]


def test_secret_value_is_not_echoed_in_errors():
    """A bad value of a secret setting is not shown in the error message."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(AWS_SECRET_ACCESS_KEY=987654321)
    assert "987654321" not in str(e.value)
    assert "AWS_SECRET_ACCESS_KEY = <hidden int>" in errors_of(e)[0]


# --- names from the original media-nommer -------------------------------------------

ALIAS_VALUES = {
    "SQS_NEW_JOB_QUEUE_NAME": ("nq", "nq"),
    "SQS_JOB_STATE_CHANGE_QUEUE_NAME": ("sq", "sq"),
    "MAX_ENCODING_JOBS_PER_EC2_INSTANCE": (2, 2),
    "FEEDERD_AUTO_SCALE_INTERVAL": (60, 60.0),
    "FEEDERD_PRUNE_JOBS_INTERVAL": (120, 120.0),
    "FEEDERD_ABANDON_INACTIVE_JOBS_THRESH": (3600, 3600.0),
    "NOMMERD_MAX_INACTIVITY": (900, 900.0),
    "NOMMERD_TERMINATE_WHEN_IDLE": (False, False),
    "NOMMERD_HEARTBEAT_INTERVAL": (15, 15.0),
    "EC2_INSTANCE_TYPE": ("m5.large", ["m5.large"]),
}


def test_alias_table_is_covered():
    """Every renamed original setting has a case in ALIAS_VALUES."""
    assert set(ALIAS_VALUES) == set(RENAMED)


@pytest.mark.parametrize("old", sorted(ALIAS_VALUES))
def test_original_name_maps_onto_new_name(tmp_path, old):
    """An original setting name sets its new name, with an info note and no warning."""
    given, expected = ALIAS_VALUES[old]
    write(tmp_path, "nomconf.py", f"{old} = {given!r}\n")
    s = load_settings("nomconf", cwd=str(tmp_path))
    new = RENAMED[old]
    assert getattr(s, new) == expected
    assert s.warnings == []
    assert len(s.notes) == 1 and old in s.notes[0] and new in s.notes[0]
    assert not hasattr(s, old)


def test_original_name_value_is_validated_under_its_own_name():
    """A bad value given under an original name is reported under that name."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(NOMMERD_MAX_INACTIVITY="10m", EC2_INSTANCE_TYPE=["m5.large"])
    errs = errors_of(e)
    assert any(x.startswith("NOMMERD_MAX_INACTIVITY (now WORKER_MAX_IDLE_S) = '10m'") for x in errs)
    assert any(x.startswith("EC2_INSTANCE_TYPE (now EC2_INSTANCE_TYPES) = ['m5.large']") for x in errs)


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_original_and_new_name_together_is_error(tmp_path, old):
    """Setting an original name and its new name in the same config is an error."""
    new = RENAMED[old]
    given, expected = ALIAS_VALUES[old]
    write(tmp_path, "nomconf.py", f"{old} = {given!r}\n{new} = {expected!r}\n")
    with pytest.raises(ConfigErrors) as e:
        load_settings("nomconf", cwd=str(tmp_path))
    (error,) = errors_of(e)
    assert f"{old} and {new} are both set" in error


def test_override_of_new_name_beats_original_name_in_module(tmp_path):
    """An override of the new name wins over the original name in the module, without conflict."""
    write(tmp_path, "nomconf.py", "NOMMERD_MAX_INACTIVITY = 900\n")
    s = load_settings("nomconf", overrides={"WORKER_MAX_IDLE_S": 30}, cwd=str(tmp_path))
    assert s.WORKER_MAX_IDLE_S == 30.0


@pytest.mark.parametrize("name, why", [
    ("FEEDERD_JOB_STATE_CHANGE_CHECK_INTERVAL", "long-polled"),
    ("NOMMERD_NEW_JOB_CHECK_INTERVAL", "long-polled"),
    ("NOMMERD_QTFASTSTART_BIN_PATH", "library"),
])
def test_obsolete_names_warn_and_are_ignored(tmp_path, name, why):
    """A setting that no longer applies loads with a warning saying why."""
    write(tmp_path, "nomconf.py", f"{name} = 60\n")
    s = load_settings("nomconf", cwd=str(tmp_path))
    assert len(s.warnings) == 1
    assert s.warnings[0].startswith(f"{name} no longer applies") and why in s.warnings[0]
    assert name in OBSOLETE and not hasattr(s, name)


def test_original_storage_classes_are_mapped_with_a_warning():
    """STORAGE_BACKENDS naming media_nommer classes is mapped to nommer's, with one warning."""
    s = Settings.from_overrides(STORAGE_BACKENDS={
        "s3": "media_nommer.core.storage_backends.s3.S3Backend",
        "http": "media_nommer.core.storage_backends.http.HTTPBackend",
        "https": "media_nommer.core.storage_backends.http.HTTPBackend",
        "file": "media_nommer.core.storage_backends.file.FileBackend",
    })
    assert s.STORAGE_BACKENDS == {
        "s3": "nommer.core.storage.s3.S3Storage",
        "http": "nommer.core.storage.http.HTTPStorage",
        "https": "nommer.core.storage.http.HTTPStorage",
        "file": "nommer.core.storage.file.FileStorage",
    }
    assert len(s.warnings) == 1 and "STORAGE_BACKENDS" in s.warnings[0]


def test_unknown_media_nommer_storage_class_is_error():
    """A media_nommer storage class with no equivalent is an error."""
    with pytest.raises(ConfigErrors) as e:
        Settings.from_overrides(STORAGE_BACKENDS={"ftp": "media_nommer.core.storage_backends.ftp.FTP"})
    assert "no nommer equivalent" in errors_of(e)[0]


def test_original_nommer_path_in_allowed_nommers_is_mapped():
    """The original FFmpegNommer path in ALLOWED_NOMMERS is mapped to ours with a warning."""
    s = Settings.from_overrides(ALLOWED_NOMMERS=["media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"])
    assert s.ALLOWED_NOMMERS == ["nommer.workerd.nommers.ffmpeg.FFmpegNommer"]
    assert len(s.warnings) == 1


ORIGINAL_NOMCONF = """\
    AWS_ACCESS_KEY_ID = "AKIAEXAMPLE"
    AWS_SECRET_ACCESS_KEY = "s3cr3t/Key"
    CONFIG_S3_BUCKET = "my_nommer_config"
    SQS_NEW_JOB_QUEUE_NAME = "media_nommer"
    SQS_JOB_STATE_CHANGE_QUEUE_NAME = "media_nommer_jstate"
    SIMPLEDB_JOB_STATE_DOMAIN = "media_nommer"
    SIMPLEDB_EC2_NOMMER_STATE_DOMAIN = "media_nommer_ec2nommer_state"
    EC2_KEY_NAME = "my-key"
    EC2_SECURITY_GROUPS = ["media_nommer"]
    EC2_AMI_ID = "ami-eb558182"
    EC2_INSTANCE_TYPE = "m1.large"
    MAX_ENCODING_JOBS_PER_EC2_INSTANCE = 2
    MAX_NUM_EC2_INSTANCES = 3
    JOB_OVERFLOW_THRESH = 2
    FEEDERD_JOB_STATE_CHANGE_CHECK_INTERVAL = 60
    FEEDERD_PRUNE_JOBS_INTERVAL = 60 * 5
    FEEDERD_ALLOW_EC2_LAUNCHES = True
    FEEDERD_ABANDON_INACTIVE_JOBS_THRESH = 3600 * 9
    FEEDERD_AUTO_SCALE_INTERVAL = 60
    NOMMERD_TERMINATE_WHEN_IDLE = True
    NOMMERD_MAX_INACTIVITY = 60 * 10
    NOMMERD_HEARTBEAT_INTERVAL = 60
    NOMMERD_NEW_JOB_CHECK_INTERVAL = 60
    NOMMERD_QTFASTSTART_BIN_PATH = "/home/nom/.virtualenvs/media_nommer/bin/qtfaststart"
    STORAGE_BACKENDS = {
        "s3": "media_nommer.core.storage_backends.s3.S3Backend",
        "http": "media_nommer.core.storage_backends.http.HTTPBackend",
        "https": "media_nommer.core.storage_backends.http.HTTPBackend",
        "file": "media_nommer.core.storage_backends.file.FileBackend",
    }
    """


def test_full_original_nomconf_loads_with_a_longer_lease(tmp_path):
    """Every setting of the original, at its original value, loads (given a lease for its heartbeat)."""
    write(tmp_path, "nomconf.py", ORIGINAL_NOMCONF + "JOB_LEASE_S = 180\n")
    s = load_settings("nomconf", cwd=str(tmp_path))
    assert s.EC2_INSTANCE_TYPES == ["m1.large"]
    assert s.MAX_ENCODING_JOBS_PER_WORKER == 2
    assert s.HEARTBEAT_INTERVAL_S == 60.0
    assert s.ABANDON_INACTIVE_JOBS_S == 32400.0
    assert s.AWS_SECRET_ACCESS_KEY == "s3cr3t/Key"
    assert s.STORAGE_BACKENDS["s3"] == "nommer.core.storage.s3.S3Storage"
    assert len(s.warnings) == 4  # three obsolete names + STORAGE_BACKENDS
    assert len(s.notes) == len(RENAMED)


def test_original_heartbeat_with_default_lease_explains_the_fix(tmp_path):
    """The original 60 s heartbeat with the default 60 s lease is one error saying what to change."""
    write(tmp_path, "nomconf.py", ORIGINAL_NOMCONF)
    with pytest.raises(ConfigErrors) as e:
        load_settings("nomconf", cwd=str(tmp_path))
    (error,) = errors_of(e)
    assert error.startswith("NOMMERD_HEARTBEAT_INTERVAL (now HEARTBEAT_INTERVAL_S) = 60 is more "
                            "than a third of JOB_LEASE_S = 60")
    assert "JOB_LEASE_S >= 180" in error
    assert len(e.value.warnings) == 4


# --- Settings -------------------------------------------------------------------------

def test_settings_are_immutable():
    """Setting or deleting an attribute raises, and mutating a returned list changes nothing."""
    s = Settings.from_overrides()
    with pytest.raises(AttributeError):
        s.API_PORT = 1
    with pytest.raises(AttributeError):
        s.NEW_NAME = 1
    with pytest.raises(AttributeError):
        del s.API_PORT
    s.ALLOWED_NOMMERS.append("evil.module.Class")
    s.STORAGE_BACKENDS["evil"] = "evil.module.Class"
    s.as_dict()["EC2_SECURITY_GROUPS"].append("x")
    s.warnings.append("x")
    assert s.ALLOWED_NOMMERS == defaults.ALLOWED_NOMMERS
    assert "evil" not in s.STORAGE_BACKENDS
    assert s.EC2_SECURITY_GROUPS == defaults.EC2_SECURITY_GROUPS
    assert s.warnings == []


def test_settings_do_not_share_state_with_defaults():
    """Loading does not hand out the defaults module's own lists."""
    s = Settings.from_overrides(EC2_SECURITY_GROUPS=["a"])
    assert defaults.EC2_SECURITY_GROUPS == ["media_nommer"]
    assert s.EC2_SECURITY_GROUPS == ["a"]


def test_unknown_attribute_suggests_a_name():
    """Reading a misspelt setting raises AttributeError with a suggestion."""
    s = Settings.from_overrides()
    with pytest.raises(AttributeError, match="did you mean API_PORT"):
        s.API_PROT


def test_from_overrides_validates_like_a_config():
    """from_overrides applies the same rules as a config file."""
    assert Settings.from_overrides(API_PORT=8080).API_PORT == 8080
    with pytest.raises(ConfigErrors):
        Settings.from_overrides(API_PORT="8080")


def test_redacted_hides_secrets():
    """redacted() shows secrets as *** and URL passwords hidden; as_dict keeps them."""
    s = Settings.from_overrides(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="s3cr3t",
                                AWS_ENDPOINT_URL="http://user:pw@localhost:5000")
    r = redacted(s)
    assert r["AWS_SECRET_ACCESS_KEY"] == "***"
    assert r["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert r["AWS_ENDPOINT_URL"] == "http://user:***@localhost:5000"
    assert r["API_PORT"] == s.API_PORT
    assert "s3cr3t" not in repr(r) and "s3cr3t" not in repr(s)
    assert s.as_dict()["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    other = redacted({"SOME_TOKEN": "t", "DB_PASSWORD": "p", "UNSET_SECRET": None})
    assert other == {"SOME_TOKEN": "***", "DB_PASSWORD": "***", "UNSET_SECRET": None}


# --- nomconf.example.py ------------------------------------------------------------------

def test_example_lists_every_setting():
    """nomconf.example.py shows every setting of defaults.py as a commented-out line."""
    with open(EXAMPLE) as f:
        text = f.read()
    shown = set(re.findall(r"^# ([A-Z][A-Z0-9_]*) = ", text, re.M))
    assert shown == DEFAULT_NAMES


def test_example_as_is_changes_nothing(tmp_path):
    """Loading nomconf.example.py unchanged gives the defaults and no warnings."""
    s = load_settings(EXAMPLE, cwd=str(tmp_path))
    assert s.as_dict() == load_settings(cwd=str(tmp_path)).as_dict()
    assert s.warnings == [] and s.notes == []
    assert s.config_path == EXAMPLE


def test_example_uncommented_is_valid_and_shows_defaults(tmp_path):
    """Uncommenting every setting of the example gives a valid config equal to the defaults."""
    lines = open(EXAMPLE).read().splitlines()
    code, i = [], 0
    while i < len(lines):
        if re.match(r"^# [A-Z][A-Z0-9_]* = ", lines[i]):
            chunk = [lines[i][2:]]
            while True:
                try:
                    compile("\n".join(chunk), "chunk", "exec")
                    break
                except SyntaxError:
                    i += 1
                    chunk.append(lines[i][2:])
            code += chunk
        i += 1
    path = write(tmp_path, "uncommented.py", "\n".join(code) + "\n")
    s = load_settings(path, cwd=str(tmp_path))
    expected = load_settings(cwd=str(tmp_path)).as_dict()
    expected["MAX_NUM_WORKERS"] = s.MAX_NUM_WORKERS  # the example shows 4, the default is the CPU count
    assert s.as_dict() == expected
    assert s.warnings == []
