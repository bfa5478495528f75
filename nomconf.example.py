# nommer settings: an example nomconf.
#
# Copy this file to nomconf.py (git-ignored) in the directory you start the
# daemons from, or point --config at it (a path to a .py file, or a module
# name on sys.path; the default is a module named nomconf, and when there is
# none the built-in defaults apply). Uncomment only what you change: every
# line below shows the default. Only UPPER_CASE names count; a helper value of
# your own must be named in lower case or start with "_". An unknown or
# misspelt name, a wrong type or a bad value stops the daemons with a list of
# every problem at once.
#
# Defaults and their documentation: nommer/conf/defaults.py.
# "_S" at the end of a name means seconds (int or float).

# --- Where things live -------------------------------------------------------

# SQLite job store, local queue and scratch space. Relative paths are taken
# against the directory the daemon starts in.
# DATA_DIR = "nommer-data"

# Per-job scratch directories. None means DATA_DIR/scratch.
# SCRATCH_DIR = None

# --- Backends (chosen by name) ----------------------------------------------

# "sqlite" (embedded). "dynamodb" and "simpledb" come with the AWS backends.
# JOB_STORE_BACKEND = "sqlite"

# "local" (SQLite-backed, SQS semantics). "sqs" comes with the AWS backends.
# WORK_QUEUE_BACKEND = "local"

# "local" (feederd starts workerd processes on this machine), "ec2" (feederd
# launches spot instances; see the EC2 fleet below) or "none" (you start workers).
# FLEET_BACKEND = "local"

# --- feederd's HTTP API -------------------------------------------------------

# TCP port of the JSON API, 1-65535.
# API_PORT = 8001

# Interface the API listens on ("" = all). On anything but loopback feederd
# refuses to start until an API key exists (nommer keys create NAME); on
# loopback, anonymous callers are served only while no key exists.
# API_INTERFACE = "127.0.0.1"

# Largest request body, bytes (413 from Content-Length or while streaming,
# before anything is spooled), 1024 to 64 MiB.
# MAX_REQUEST_BODY_BYTES = 1048576

# Requests per minute one API key (or the anonymous caller) may make; then
# 429 with Retry-After.
# API_RATE_LIMIT_PER_MINUTE = 1200

# Unfinished jobs one API key may have at once; a submit past it gets 429.
# MAX_UNFINISHED_JOBS_PER_KEY = 1000

# Most jobs one POST /jobs/batch may hold (a larger batch is refused whole).
# MAX_BATCH_JOBS = 100

# --- Queues and leases --------------------------------------------------------

# Queue names: 1-80 letters, digits, "-" or "_".
# NEW_JOB_QUEUE_NAME = "media_nommer"
# STATE_CHANGE_QUEUE_NAME = "media_nommer_jstate"

# Lease a worker takes on a job; extended every HEARTBEAT_INTERVAL_S while the
# job runs. HEARTBEAT_INTERVAL_S must be at most a third of JOB_LEASE_S.
# JOB_LEASE_S = 60.0
# HEARTBEAT_INTERVAL_S = 10.0

# Times a job may be taken by a worker before it ends in ERROR (>= 1).
# MAX_JOB_ATTEMPTS = 3

# Longest a single receive waits for a message (long polling), > 0 and <= 20.
# QUEUE_WAIT_TIME_S = 20.0

# How often a waiting receive on the local queue looks for a message.
# LOCAL_QUEUE_POLL_INTERVAL_S = 0.02

# Delay before a transiently failed job is retried; doubled on each attempt
# (>= 0).
# RETRY_BACKOFF_S = 5.0

# A waiting job's priority (0..100) grows by one point every this many seconds,
# so low-priority jobs never starve (see README, "Priorities").
# PRIORITY_AGING_S = 30.0

# --- Autoscaling --------------------------------------------------------------

# Most workers the local fleet runs at once (>= 1). Default: the number of
# CPUs of the machine.
# MAX_NUM_WORKERS = 4

# Jobs one worker runs at once (>= 1).
# MAX_ENCODING_JOBS_PER_WORKER = 1

# Named pools besides "default", each with its own queue, fleet and workers:
# {"gpu": {"max_workers": 2, "fleet": {"EC2_INSTANCE_TYPES": ["g5.xlarge"]},
#          "worker": {"MAX_ENCODING_JOBS_PER_WORKER": 2}}} (see README, "Pools").
# POOLS = {}

# Unfinished jobs tolerated above running capacity before another worker is
# started (>= 0).
# JOB_OVERFLOW_THRESH = 0

# How often feederd re-evaluates the capacity policy.
# AUTOSCALE_INTERVAL_S = 5.0

# An idle worker exits after this long, if WORKER_TERMINATE_WHEN_IDLE.
# WORKER_MAX_IDLE_S = 600.0
# WORKER_TERMINATE_WHEN_IDLE = True

# --- feederd housekeeping -----------------------------------------------------

# How often the reaper looks for dead-lettered and abandoned jobs.
# PRUNE_JOBS_INTERVAL_S = 300.0

# A running job whose worker has not heartbeated for this long is ABANDONED
# (must be more than HEARTBEAT_INTERVAL_S).
# ABANDON_INACTIVE_JOBS_S = 32400.0

# --- Webhooks (notify_url) ----------------------------------------------------

# Attempts per notification (>= 1), first retry delay (doubled each time),
# timeout of one request.
# WEBHOOK_MAX_ATTEMPTS = 5
# WEBHOOK_BACKOFF_S = 1.0
# WEBHOOK_TIMEOUT_S = 10.0

# Most bytes of a webhook receiver's response read, bytes.
# WEBHOOK_MAX_RESPONSE_BYTES = 65536

# Base secret of the webhook signatures (X-Nommer-Signature); each API key's
# signing secret is derived from it (`nommer keys webhook-secret KEY_ID`).
# None: generated at first use into DATA_DIR/webhook_signing.secret.
# WEBHOOK_SIGNING_SECRET = None

# Events one job's log keeps in full (GET /job/<id>/events); past it progress
# and webhook events are dropped, the others kept up to twice this.
# MAX_EVENTS_PER_JOB = 500

# --- Live event stream (GET /events) ------------------------------------------

# Last events kept in memory for streams that reconnect with Last-Event-ID;
# a client further behind gets a fresh snapshot (event: reset).
# SSE_BUFFER_EVENTS = 10000

# Seconds between heartbeat comments on every stream.
# SSE_HEARTBEAT_S = 15.0

# Bytes a stream may fall behind before that client is disconnected.
# SSE_MAX_BUFFER_BYTES = 1048576

# Event streams open at once, at most (503 past it), and per API key (429).
# SSE_MAX_CLIENTS = 1000
# SSE_MAX_CLIENTS_PER_KEY = 50

# Jobs not yet final, and final ones, in a stream's first snapshot, at most.
# SSE_SNAPSHOT_JOBS = 500
# SSE_SNAPSHOT_FINAL_JOBS = 50

# Lifetime of a stream token (POST /events/token, for browsers), seconds.
# SSE_TOKEN_TTL_S = 60.0

# --- Encoding -----------------------------------------------------------------

# ffmpeg and ffprobe executables (looked up on PATH when not absolute).
# FFMPEG_BIN = "ffmpeg"
# FFPROBE_BIN = "ffprobe"

# An ffmpeg built with libvmaf, for VMAF (quality metrics, compare outputs,
# target quality). None: the imageio-ffmpeg wheel's binary when installed
# (pip install 'nommer[vmaf]'; GPLv3, see README "Quality"). Without either,
# jobs asking for VMAF are refused at submit; PSNR and SSIM use FFMPEG_BIN.
# VMAF_FFMPEG_BIN = None

# Runtime limit of one ffmpeg/ffprobe run; then SIGTERM, and SIGKILL after
# FFMPEG_KILL_GRACE_S.
# FFMPEG_TIMEOUT_S = 21600.0
# FFMPEG_KILL_GRACE_S = 5.0

# Sandbox of every ffmpeg/ffprobe: "bwrap" (bubblewrap: no network, only the
# job's scratch writable, nothing else of the host visible, empty environment)
# or "none" (platforms without bubblewrap; a warning at every start). A worker
# whose sandbox cannot start refuses to start.
# FFMPEG_SANDBOX = "bwrap"
# BWRAP_BIN = "bwrap"

# Resource limits of each sandboxed ffmpeg/ffprobe: CPU seconds, address space
# (bytes), size of a file it writes (bytes), processes/threads of the user.
# FFMPEG_RLIMIT_CPU_S = 86400
# FFMPEG_RLIMIT_AS_BYTES = 17179869184
# FFMPEG_RLIMIT_FSIZE_BYTES = 68719476736
# FFMPEG_RLIMIT_NPROC = 4096

# Largest source a worker takes, bytes; largest output ffmpeg may write, bytes
# (given as -fs).
# MAX_SOURCE_BYTES = 53687091200
# MAX_OUTPUT_BYTES = 53687091200

# An output may last at most this many times the source's duration (+10 s),
# so padding filters cannot write forever (>= 1).
# MAX_OUTPUT_DURATION_FACTOR = 2.0

# Free scratch space needed before a job starts, bytes (plus the source's size
# when known); a worker short of it releases the job to another worker.
# SCRATCH_MIN_FREE_BYTES = 1073741824

# Chunked encoding: a declarative job whose source lasts at least this many
# seconds is split, its chunks encoded by any worker, then merged (a body's
# "chunking": false opts out, true or {"target_s": 30} opts in). None: only on request.
# CHUNKING_MIN_SOURCE_S = 600.0
# Chunk length aimed at, shortest and longest chunk, seconds.
# CHUNK_TARGET_S = 30.0
# CHUNK_MIN_S = 2.0
# CHUNK_MAX_S = 120.0

# Progress is written to the job store at most this often.
# PROGRESS_WRITE_INTERVAL_S = 1.0

# Nommer classes a job may name (dotted paths); anything else is refused.
# OutputsNommer runs declarative jobs (outputs or a preset).
# ALLOWED_NOMMERS = ["nommer.workerd.nommers.ffmpeg.FFmpegNommer",
#                    "nommer.workerd.nommers.outputs.OutputsNommer"]

# Old dotted paths accepted in jobs, mapped to the class they mean.
# NOMMER_ALIASES = {
#     "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer":
#         "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
# }

# --- Presets ------------------------------------------------------------------

# A directory of your own presets, one NAME.json each: {"description": "...",
# "outputs": [...]} (optionally "requires": ["image_path"]), or the 2011 form
# {"description", "nommer", "options"}. Replaces built-in presets of the same
# name; every file is validated when the settings are loaded.
# PRESETS_DIR = None

# Presets written here: {NAME: preset object}; they win over PRESETS_DIR's and
# built-in ones of the same name. For example:
#   PRESETS = {"hls-fast": {"description": "HLS, 4 s segments, fast encode",
#              "outputs": [{"type": "hls", "segment_s": 4, "encoder_preset": "veryfast"}]}}
# PRESETS = {}

# --- Storage ------------------------------------------------------------------

# URI scheme -> storage backend class. Replaces the whole default mapping.
# The original's media_nommer.core.storage_backends.* classes are accepted and
# mapped to these (with a warning).
# STORAGE_BACKENDS = {
#     "file": "nommer.core.storage.file.FileStorage",
#     "http": "nommer.core.storage.http.HTTPStorage",
#     "https": "nommer.core.storage.http.HTTPStorage",
#     "s3": "nommer.core.storage.s3.S3Storage",
# }

# Existing directories file:// sources and destinations must lie under, e.g.
# ["/srv/media/in", "/srv/media/out"]. None means the directory the daemon
# starts in.
# None means ./media in the directory the daemons start in (feederd creates
# it). A root may not contain DATA_DIR, the scratch directory, this file or
# nommer's code: the daemons refuse to start if one does.
# FILE_STORAGE_ROOTS = None

# S3 buckets sources and destinations may name; None: any the credentials reach.
# S3_ALLOWED_BUCKETS = None

# Networks (CIDR) that http(s) sources and webhooks may reach although they are
# loopback, private, link-local, unique-local, multicast or unspecified; checked
# after DNS resolution and on every redirect. Empty: public addresses only.
# ALLOWED_PRIVATE_NETWORKS = []

# An http(s) download that receives no byte for this long fails (and is
# retried).
# HTTP_DOWNLOAD_TIMEOUT_S = 60.0

# --- AWS (used by the AWS backends) --------------------------------------------

# Credentials; None means boto3's usual chain (environment, instance role).
# The secret never appears in logs or API responses.
# AWS_ACCESS_KEY_ID = None
# AWS_SECRET_ACCESS_KEY = None
# AWS_REGION = None
# An http(s) endpoint to use instead of AWS's (e.g. a local test server).
# AWS_ENDPOINT_URL = None
# Per-service endpoints, overriding AWS_ENDPOINT_URL: {"dynamodb": "http://127.0.0.1:8000"}.
# AWS_ENDPOINT_URLS = {}
# Threads each AWS-backed part (store, queue, S3) runs boto3 calls in.
# AWS_MAX_THREADS = 8
# Create missing tables, domains, queues and buckets on first use.
# AWS_CREATE_RESOURCES = True
# DynamoDB table of the jobs (JOB_STORE_BACKEND = "dynamodb").
# DYNAMODB_JOB_TABLE = "nommer_jobs"
# Seconds after which finished jobs expire from DynamoDB (TTL); None keeps them.
# DYNAMODB_JOB_TTL_S = None
# DynamoDB table / SimpleDB domain of the jobs' event logs; None: the job
# table's / domain's name + "_events".
# DYNAMODB_EVENTS_TABLE = None
# SIMPLEDB_EVENTS_DOMAIN = None
# S3 outputs: server-side encryption ("AES256" or "aws:kms"), KMS key, storage class.
# S3_SERVER_SIDE_ENCRYPTION = None
# S3_SSE_KMS_KEY_ID = None
# S3_STORAGE_CLASS = None
# Fernet key encrypting credentials given inside URIs (s3://KEY:SECRET@bucket/key)
# in the job store; None refuses such URIs (use an instance role instead).
# JOB_CREDENTIALS_KEY = None
# CONFIG_S3_BUCKET = "nommer_config"
# SIMPLEDB_JOB_STATE_DOMAIN = "media_nommer"

# --- Worker registry ---------------------------------------------------------------
# Workers heartbeat here every HEARTBEAT_INTERVAL_S (GET /workers, nommer workers).
# An EC2 worker silent this long (seconds) has its instance terminated.
# WORKER_HEARTBEAT_TIMEOUT_S = 180.0
# Entries of workers gone this long (seconds) are deleted.
# WORKER_FORGET_AFTER_S = 86400.0
# DynamoDB table / SimpleDB domain (the original's) of the registry.
# DYNAMODB_WORKER_TABLE = "nommer_workers"
# SIMPLEDB_EC2_NOMMER_STATE_DOMAIN = "media_nommer_ec2nommer_state"

# DynamoDB table / SimpleDB domain of the API keys (hashes only), used with
# those job stores; the SQLite store keeps keys in DATA_DIR.
# DYNAMODB_KEY_TABLE = "nommer_api_keys"
# SIMPLEDB_KEY_DOMAIN = "nommer_api_keys"

# --- EC2 fleet (FLEET_BACKEND = "ec2": needs sqs and dynamodb or simpledb) ----------
# Image the workers boot from (deploy/packer builds it).
# EC2_AMI_ID = None
# Instance types tried in order when one has no spot capacity.
# EC2_INSTANCE_TYPES = ["c7i.large"]
# Subnets tried in order (one per AZ); security group ids for them.
# EC2_SUBNET_IDS = []
# EC2_SECURITY_GROUP_IDS = []
# Security group names in the default VPC and an SSH key pair (the original's way).
# EC2_SECURITY_GROUPS = ["media_nommer"]
# EC2_KEY_NAME = None
# Instance profile of the workers (its role grants queue, store and S3 access).
# EC2_IAM_INSTANCE_PROFILE = None
# Most instances at once, running and booting.
# MAX_NUM_EC2_INSTANCES = 3
# "spot" or "on-demand"; highest spot price (USD/hour, a string; None = on-demand price).
# EC2_MARKET = "spot"
# SPOT_MAX_PRICE = None
# Launch on-demand when no type/subnet has spot capacity.
# EC2_ON_DEMAND_FALLBACK = False
# Value of the nommer:fleet tag instances are counted by.
# EC2_FLEET_NAME = "nommer"
# An instance not registered this long after launch is terminated (seconds).
# EC2_BOOT_TIMEOUT_S = 600.0
# Price for the cost estimate when DescribeSpotPriceHistory has none (USD/hour).
# EC2_SPOT_PRICE_PER_HOUR = None
# Instance metadata (IMDSv2) base URL, and how often workers poll it for a spot
# interruption notice (seconds).
# EC2_METADATA_URL = "http://169.254.169.254"
# SPOT_INTERRUPTION_POLL_S = 5.0
# False: feederd never launches instances (the original's switch).
# FEEDERD_ALLOW_EC2_LAUNCHES = True

# --- Names from the original media-nommer ---------------------------------------
#
# A nomconf.py written for media-nommer loads unchanged. These names are taken
# as their new ones (set one or the other, not both):
#
#   SQS_NEW_JOB_QUEUE_NAME                 -> NEW_JOB_QUEUE_NAME
#   SQS_JOB_STATE_CHANGE_QUEUE_NAME        -> STATE_CHANGE_QUEUE_NAME
#   MAX_ENCODING_JOBS_PER_EC2_INSTANCE     -> MAX_ENCODING_JOBS_PER_WORKER
#   FEEDERD_AUTO_SCALE_INTERVAL            -> AUTOSCALE_INTERVAL_S
#   FEEDERD_PRUNE_JOBS_INTERVAL            -> PRUNE_JOBS_INTERVAL_S
#   FEEDERD_ABANDON_INACTIVE_JOBS_THRESH   -> ABANDON_INACTIVE_JOBS_S
#   NOMMERD_MAX_INACTIVITY                 -> WORKER_MAX_IDLE_S
#   NOMMERD_TERMINATE_WHEN_IDLE            -> WORKER_TERMINATE_WHEN_IDLE
#   NOMMERD_HEARTBEAT_INTERVAL             -> HEARTBEAT_INTERVAL_S
#   EC2_INSTANCE_TYPE (one type)           -> EC2_INSTANCE_TYPES (a list)
#
# These no longer apply and are ignored with a warning:
#
#   FEEDERD_JOB_STATE_CHANGE_CHECK_INTERVAL, NOMMERD_NEW_JOB_CHECK_INTERVAL
#       (queues are long-polled; there is no poll interval)
#   NOMMERD_QTFASTSTART_BIN_PATH
#       (qtfaststart runs as a library inside the worker)
#
# Note: the original's NOMMERD_HEARTBEAT_INTERVAL = 60 needs JOB_LEASE_S >= 180.
