"""The chunked job's request, plan record, chunk states and task messages (nommer.core.chunking)."""

import pytest

from nommer.conf import load_settings
from nommer.core.chunking import (
    ChunkState, IllegalChunkTransition, all_finished, check_chunk_transition, chunk_message_body,
    chunks_progress, normalize_request, parse_chunk_message, public_chunks)
from nommer.core.errors import InvalidJobSpec
from nommer.core.spec import validate_submission
from nommer.core.workqueue.jobs import parse_job_message


@pytest.fixture
def settings(tmp_path):
    return load_settings(overrides={"DATA_DIR": str(tmp_path / "data"), "FILE_STORAGE_ROOTS": [str(tmp_path)]})


def test_a_chunk_message_names_its_job_life_and_index():
    body = chunk_message_body("abc#2", 7)
    assert body == "abc#2@chunk7"
    job_body, index = parse_chunk_message(body)
    assert (job_body, index) == ("abc#2", 7)
    assert parse_job_message(job_body) == ("abc", 2)
    assert parse_chunk_message("abc") == ("abc", None)
    assert parse_chunk_message("abc@chunkx") == ("abc@chunkx", None)


def test_chunk_states_move_only_along_the_table():
    assert check_chunk_transition(0, "PENDING", "ENCODING") is ChunkState.ENCODING
    assert check_chunk_transition(0, "ENCODING", "FINISHED") is ChunkState.FINISHED
    assert check_chunk_transition(0, "ENCODING", "PENDING") is ChunkState.PENDING
    for old, new in [("FINISHED", "ENCODING"), ("FINISHED", "PENDING"), ("PENDING", "FINISHED")]:
        with pytest.raises(IllegalChunkTransition):
            check_chunk_transition(3, old, new)


def test_request_normalized_with_the_server_defaults(settings):
    assert normalize_request(None, settings)["mode"] == "auto"
    assert normalize_request(False, settings)["mode"] == "off"
    on = normalize_request({"target_s": 10}, settings)
    assert on == {"mode": "on", "target_s": 10.0, "min_s": settings.CHUNK_MIN_S, "max_s": settings.CHUNK_MAX_S}
    with pytest.raises(InvalidJobSpec) as e:
        normalize_request({"target_s": 10, "max_s": 5}, settings)
    assert "min_s <= target_s <= max_s" in e.value.message


def test_submit_stores_the_request_and_refuses_it_on_a_2011_job(settings, tmp_path):
    src = tmp_path / "a.mp4"
    src.write_bytes(b"x")
    body = {"source_path": f"file://{src}", "dest_path": f"file://{tmp_path}/out/",
            "outputs": [{"type": "mp4", "name": "v.mp4"}], "chunking": {"target_s": 20}}
    spec = validate_submission(body, settings)
    assert spec["job_options"]["chunking"]["mode"] == "on"
    assert spec["job_options"]["chunking"]["target_s"] == 20.0
    with pytest.raises(InvalidJobSpec) as e:
        validate_submission(dict(body, chunking={"target_s": 20, "bogus": 1}), settings)
    assert "bogus" in e.value.message or "chunking" in (e.value.field or "")
    old = {"source_path": f"file://{src}", "dest_path": f"file://{tmp_path}/out.mp4", "chunking": True,
           "job_options": {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                           "options": [{"outfile_options": {"vcodec": "libx264"}}]}}
    with pytest.raises(InvalidJobSpec) as e:
        validate_submission(old, settings)
    assert e.value.field == "chunking"


def test_public_view_and_progress():
    chunks = [{"index": 0, "start_s": 0.0, "end_s": 2.0, "frames": 48, "state": "FINISHED", "attempts": 1,
               "worker_id": "w1", "progress": 100.0, "details": None, "plan": {"secret": 1}},
              {"index": 1, "start_s": 2.0, "end_s": 4.0, "frames": 48, "state": "ENCODING", "attempts": 2,
               "worker_id": "w2", "progress": 50.0, "details": None, "files": {}}]
    view = public_chunks(chunks)
    assert set(view[0]) == {"index", "start_s", "end_s", "frames", "state", "attempts", "worker_id", "progress",
                            "details"}
    assert chunks_progress(chunks) == pytest.approx(75.0)
    assert not all_finished(chunks)
    assert all_finished([chunks[0]])
    assert public_chunks(None) is None
