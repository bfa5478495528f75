# The nommer worker image (AMI): Debian 12 + ffmpeg + nommer in /opt/nommer/venv +
# the nommer-workerd unit, enabled but started only where user data wrote
# /etc/nommer/workerd.env. Build it (deploy/README.md):
#
#   cd deploy/packer
#   packer init .
#   packer validate -var nommer_version=0.1.0 .
#   packer build -var nommer_version=0.1.0 -var region=eu-west-1 .
#
# Then set EC2_AMI_ID in feederd's nomconf.py to the AMI id it prints.

packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}

variable "nommer_version" {
  type        = string
  description = "nommer release pip installs on the image (nommer==VERSION)."
  validation {
    condition     = can(regex("^[0-9][0-9A-Za-z.]*$", var.nommer_version))
    error_message = "The nommer_version variable must be a release version such as 0.1.0 (digits, letters and dots)."
  }
}

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region the image is built in (and registered in)."
}

variable "instance_type" {
  type        = string
  default     = "c7i.large"
  description = "Instance type of the build instance (x86_64; use an arm64 type with base_arch = arm64)."
}

variable "base_arch" {
  type        = string
  default     = "x86_64"
  description = "Architecture of the base image: x86_64 or arm64 (Graviton worker types)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance (needs outbound internet for apt and PyPI); empty: the default VPC."
}

variable "pip_index_url" {
  type        = string
  default     = ""
  description = "Package index pip installs from instead of PyPI (a private one serving nommer and its dependencies); empty: PyPI."
}

locals {
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
  # Debian names its images by Debian architecture names.
  debian_arch = var.base_arch == "arm64" ? "arm64" : "amd64"
}

source "amazon-ebs" "worker" {
  region        = var.region
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  ssh_username  = "admin"

  # Debian 12 (bookworm), the newest official image of Debian's own account.
  source_ami_filter {
    filters = {
      name                = "debian-12-${local.debian_arch}-*"
      architecture        = var.base_arch
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }

  # IMDSv2 only, on the build instance and (imds_support) on instances of the image.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  ami_name        = "nommer-worker-${var.nommer_version}-${local.timestamp}"
  ami_description = "nommer worker ${var.nommer_version} (Debian 12, ffmpeg, nommer-workerd.service)"
  ena_support     = true

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 8
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = {
    "nommer:role"    = "worker-image"
    "nommer:version" = var.nommer_version
    "Name"           = "nommer-worker-${var.nommer_version}"
    "base_ami"       = "{{ .SourceAMI }}"
  }
  snapshot_tags = {
    "nommer:role"    = "worker-image"
    "nommer:version" = var.nommer_version
  }
  run_tags = {
    "nommer:role" = "image-build"
  }
}

build {
  name    = "nommer-worker"
  sources = ["source.amazon-ebs.worker"]

  # The base image's first boot may still be running (apt lists, SSH keys).
  provisioner "shell" {
    inline = [
      "cloud-init status --wait || true",
      "mkdir -p /tmp/nommer-deploy",
    ]
  }

  # provision.sh needs the unit files beside it: upload the whole deploy/ folder.
  provisioner "file" {
    source      = "${path.root}/../"
    destination = "/tmp/nommer-deploy"
  }

  provisioner "shell" {
    environment_vars = compact([
      var.pip_index_url == "" ? "" : "PIP_INDEX_URL=${var.pip_index_url}",
    ])
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    inline = [
      "bash /tmp/nommer-deploy/provision.sh --nommer \"nommer==${var.nommer_version}\"",
      "test ! -e /etc/nommer/workerd.env",
      "rm -rf /tmp/nommer-deploy",
      # Instances of the image run cloud-init afresh (their user data writes workerd.env).
      "cloud-init clean --logs",
    ]
  }

  post-processor "manifest" {
    output     = "nommer-worker-manifest.json"
    strip_path = true
    custom_data = {
      nommer_version = var.nommer_version
    }
  }
}
