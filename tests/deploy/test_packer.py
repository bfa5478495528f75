"""deploy/packer/nommer-worker.pkr.hcl parsed with python-hcl2 (Packer itself
is not installable here: Debian ships 1.6.6, older than the template's
`required_plugins`). Checks what the worker image depends on."""

from pathlib import Path

import pytest

hcl2 = pytest.importorskip("hcl2")

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "packer" / "nommer-worker.pkr.hcl"


def plain(value):
    """python-hcl2 >= 8 keeps string quotes (and marks blocks); older ones do
    not: the same plain values from both."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


@pytest.fixture(scope="module")
def template():
    with TEMPLATE.open() as f:
        return plain(hcl2.load(f))


def source(template):
    [sources] = template["source"]
    return sources["amazon-ebs"]["worker"]


def test_amazon_plugin_is_required(template):
    [packer] = template["packer"]
    [plugins] = packer["required_plugins"]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"


def test_variables(template):
    variables = {name: body for block in template["variable"] for name, body in block.items()}
    assert {"nommer_version", "region", "instance_type"} <= set(variables)
    assert "default" not in variables["nommer_version"]  # a build names its release


def test_imdsv2_is_required_on_the_builder(template):
    [metadata] = source(template)["metadata_options"]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_endpoint"] == "enabled"


def test_base_image_comes_from_a_named_owner(template):
    [ami_filter] = source(template)["source_ami_filter"]
    assert ami_filter["owners"] and all(owner.isdigit() for owner in ami_filter["owners"])
    assert ami_filter["most_recent"] is True
    assert ami_filter["filters"]["name"].startswith("debian-12-")
    assert source(template)["region"] == "${var.region}"
    assert source(template)["instance_type"] == "${var.instance_type}"


def test_ami_tags(template):
    tags = source(template)["tags"]
    assert tags["nommer:role"] == "worker-image"
    assert tags["nommer:version"] == "${var.nommer_version}"


def test_provisioner_runs_provision_sh_with_the_version(template):
    [build] = template["build"]
    shell = [block["shell"] for block in build["provisioner"] if "shell" in block]
    commands = [line for block in shell for line in block.get("inline", [])]
    runs = [c for c in commands if "provision.sh" in c]
    assert runs == ['bash /tmp/nommer-deploy/provision.sh --nommer "nommer==${var.nommer_version}"']
    # provision.sh finds the unit files beside it: the deploy/ folder is uploaded first.
    uploads = [block["file"] for block in build["provisioner"] if "file" in block]
    assert [u["destination"] for u in uploads] == ["/tmp/nommer-deploy"]
    order = [next(iter(block)) for block in build["provisioner"]]
    assert order.index("file") < max(i for i, kind in enumerate(order) if kind == "shell")
