import os
import stat

import pytest

from lesiondb.core.pseudonym import KEY_FILE, Pseudonymizer
from lesiondb.errors import ConfigError


def test_key_file_created_private_and_reused(tmp_path):
    a = Pseudonymizer.from_data_dir(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode)
    assert mode == 0o600
    b = Pseudonymizer.from_data_dir(tmp_path)
    assert a.patient("deeplesion", "1") == b.patient("deeplesion", "1")


def test_user_key_and_distinct_namespaces(tmp_path):
    a = Pseudonymizer.from_data_dir(tmp_path, key="a-user-given-key-of-length")
    b = Pseudonymizer.from_data_dir(tmp_path / "other", key="a-user-given-key-of-length")
    assert a.patient("deeplesion", "1") == b.patient("deeplesion", "1")
    assert a.patient("deeplesion", "1") != a.patient("dicom", "1")
    assert a.study("deeplesion", "1", "2") != a.study("deeplesion", "12", "")
    with pytest.raises(ConfigError):
        Pseudonymizer(b"short")
