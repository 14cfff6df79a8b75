import os
import stat

import pytest

from lesiondb.core.pseudonym import KEY_FILE, Pseudonymizer, key_bytes
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


def test_key_given_as_the_key_files_text_gives_the_same_ids(tmp_path):
    """`--pseudonym-key "$(cat DATA_DIR/pseudonym.key)"` is the key of the file (one key format)."""
    from_file = Pseudonymizer.from_data_dir(tmp_path)
    text = (tmp_path / KEY_FILE).read_text()
    for given in (text, text.strip(), text.strip().upper()):  # $(cat …) drops the newline; hex is case-free
        passed = Pseudonymizer.from_data_dir(tmp_path / "elsewhere", key=given)
        assert passed.patient("deeplesion", "1") == from_file.patient("deeplesion", "1")
        assert passed.fingerprint == from_file.fingerprint
    assert not (tmp_path / "elsewhere").exists()  # a given key creates no key file


def test_key_formats_hex_or_text():
    assert key_bytes("00" * 16) == bytes(16)
    assert key_bytes("  " + "ab" * 32 + "\n") == bytes.fromhex("ab" * 32)
    assert key_bytes("a-user-given-key-of-length") == b"a-user-given-key-of-length"  # not hex: the text
    assert key_bytes("abc" * 11) == b"abc" * 11  # odd number of hex digits: text
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        key_bytes("0123456789abcde")  # 15 characters, not 32 hex digits
    with pytest.raises(ConfigError):
        Pseudonymizer.from_text("  short \n")


def test_fingerprint_identifies_the_key_without_revealing_it():
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"k" * 31 + b"j")
    assert a.fingerprint == Pseudonymizer(b"k" * 32).fingerprint
    assert a.fingerprint != b.fingerprint and a.fingerprint.startswith("K-")
    assert (b"k" * 32).hex() not in a.fingerprint and "kkkk" not in a.fingerprint


def test_key_file_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Pseudonymizer.from_data_dir(tmp_path / "new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert [p.name for p in (tmp_path / "new").iterdir()] == [KEY_FILE]  # no temporary file left


def test_unreadable_key_file_is_a_config_error(tmp_path):
    (tmp_path / KEY_FILE).write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError):
        Pseudonymizer.from_data_dir(tmp_path)


def test_uid_pseudonyms_are_dicom_uids_stable_per_key():
    import re

    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    uid = "1.2.826.0.1.3680043.8.498.1"
    u = a.uid("dicom", uid)
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", u) and len(u) <= 64
    assert u == a.uid("dicom", uid) != b.uid("dicom", uid) != uid
    assert a.uid("dicom", uid + "2") != u
