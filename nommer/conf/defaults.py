"""Default settings. A user's ``nomconf.py`` overrides any of these by name.

Every name is UPPER_CASE; the unit is in the name (``_S`` = seconds) or in the
comment above it. ``nommer.conf.loader`` validates the overrides against the
rules of ``nommer.conf.schema`` (else the types of these defaults) and reports
every problem together.
"""

import os

# --- Where things live -------------------------------------------------------

#: Directory holding the SQLite job store, the local queue and scratch space.
#: Relative paths are resolved against the working directory at load time.
DATA_DIR = "nommer-data"

#: Per-job scratch directories (downloads, pass logs, outputs) go under this
#: directory. ``None`` means ``DATA_DIR/scratch``.
SCRATCH_DIR = None

# --- Backends (chosen by name) ----------------------------------------------

#: ``"sqlite"`` (embedded), ``"dynamodb"`` or ``"simpledb"`` (AWS).
JOB_STORE_BACKEND = "sqlite"

#: ``"local"`` (SQLite-backed, SQS semantics) or ``"sqs"`` (AWS).
WORK_QUEUE_BACKEND = "local"

#: ``"local"`` (workerd child processes on this machine), ``"ec2"`` (spot
#: instances launched by feederd, see the EC2 fleet settings below) or
#: ``"none"`` (start workers yourself).
FLEET_BACKEND = "local"

# --- feederd's HTTP API -------------------------------------------------------

#: TCP port of the JSON API (the original's default).
API_PORT = 8001

#: Interface the API listens on. Loopback by default. On any other interface
#: feederd refuses to start until an API key exists (``nommer keys create``);
#: on loopback, anonymous callers are served while no key exists.
API_INTERFACE = "127.0.0.1"

#: Largest request body accepted, bytes. Refused (413) from Content-Length, or
#: as soon as a streamed body passes it, before anything is spooled to disk.
MAX_REQUEST_BODY_BYTES = 1024 * 1024

#: Requests one API key (or the anonymous caller) may make per minute; past it
#: the answer is 429 with Retry-After (seconds). /health is not counted.
API_RATE_LIMIT_PER_MINUTE = 1200

#: Unfinished jobs (PENDING to UPLOADING) one API key may have at once; a
#: submit past it is refused with 429 and Retry-After.
MAX_UNFINISHED_JOBS_PER_KEY = 1000

#: Most jobs one ``POST /jobs/batch`` may hold; a larger batch is refused (400)
#: whole. Each item counts against MAX_UNFINISHED_JOBS_PER_KEY.
MAX_BATCH_JOBS = 100

# --- Queues and leases --------------------------------------------------------

#: Name of the queue carrying new jobs (the original's SQS_NEW_JOB_QUEUE_NAME).
NEW_JOB_QUEUE_NAME = "media_nommer"

#: Name of the queue carrying state changes to feederd (the original's
#: SQS_JOB_STATE_CHANGE_QUEUE_NAME).
STATE_CHANGE_QUEUE_NAME = "media_nommer_jstate"

#: Lease (visibility timeout) a worker takes on a job, seconds. The worker
#: extends it every HEARTBEAT_INTERVAL_S while the job runs; a worker that dies
#: stops extending it and the job becomes visible to another worker after this.
JOB_LEASE_S = 60.0

#: How often a worker extends its leases and writes a heartbeat, seconds.
#: Must be well below JOB_LEASE_S (at most a third of it).
HEARTBEAT_INTERVAL_S = 10.0

#: How many times a job may be taken by a worker before it is dead-lettered and
#: ends in ERROR (SQS maxReceiveCount semantics).
MAX_JOB_ATTEMPTS = 3

#: Longest a single receive waits for a message (long polling), seconds; the
#: SQS maximum is 20.
QUEUE_WAIT_TIME_S = 20.0

#: How often a long-polling receive on the local (SQLite) queue looks for a new
#: message, seconds. Sets the pick-up latency of an idle worker.
LOCAL_QUEUE_POLL_INTERVAL_S = 0.02

#: Delay before a job that failed transiently (download timeout, worker
#: shutdown) becomes visible again, seconds; doubled on each further attempt.
RETRY_BACKOFF_S = 5.0

#: A waiting job's priority (0..100, higher first) grows by one point every
#: this many seconds, so no job starves (nommer.core.priority): locally a job
#: of priority p is overtaken by later jobs only during its first
#: (100 - p) * PRIORITY_AGING_S seconds; on SQS a worker looks first at a
#: priority band it has not looked at for (70 - band floor) * PRIORITY_AGING_S.
PRIORITY_AGING_S = 30.0

# --- Autoscaling (the capacity policy is nommer.feederd.fleet.capacity) -------

#: Most workers the local fleet runs at once. With one job per worker the
#: default runs as many jobs at once as the machine has cores.
MAX_NUM_WORKERS = os.cpu_count() or 1

#: Jobs one worker runs at once (the original's MAX_ENCODING_JOBS_PER_EC2_INSTANCE).
MAX_ENCODING_JOBS_PER_WORKER = 1

#: Named pools of workers besides "default" (nommer.core.pools), e.g.
#: {"gpu": {"max_workers": 2, "fleet": {"EC2_INSTANCE_TYPES": ["g5.xlarge"]},
#: "worker": {"MAX_ENCODING_JOBS_PER_WORKER": 2}}}. A job names its pool
#: ("pool"); each pool has its own queue, fleet and autoscaler. {}: one pool.
POOLS = {}

#: Unfinished jobs tolerated above running capacity before another worker is
#: started (the original default was 2; 0 starts a worker as soon as a job waits).
JOB_OVERFLOW_THRESH = 0

#: How often feederd re-evaluates the capacity policy, seconds (it also does so
#: at once after every submit).
AUTOSCALE_INTERVAL_S = 5.0

#: A worker that has run no job for this long exits by itself, seconds
#: (the original's NOMMERD_MAX_INACTIVITY).
WORKER_MAX_IDLE_S = 600.0

#: Whether idle workers exit at all (the original's NOMMERD_TERMINATE_WHEN_IDLE).
WORKER_TERMINATE_WHEN_IDLE = True

# --- feederd housekeeping -----------------------------------------------------

#: How often the reaper looks for dead-lettered and abandoned jobs, seconds.
PRUNE_JOBS_INTERVAL_S = 300.0

#: An in-progress job whose worker has not heartbeated for this long is
#: ABANDONED, seconds (the original abandoned on time since the last state
#: change instead, which killed long encodes).
ABANDON_INACTIVE_JOBS_S = 32400.0

# --- Webhooks (notify_url) ----------------------------------------------------

#: Attempts per notification before it is given up (first try included).
WEBHOOK_MAX_ATTEMPTS = 5

#: Delay before the first retry, seconds; doubled on each further retry.
WEBHOOK_BACKOFF_S = 1.0

#: Timeout of one notification request, seconds (connect + response).
WEBHOOK_TIMEOUT_S = 10.0

#: Most bytes of a webhook receiver's response body read (the rest is dropped).
WEBHOOK_MAX_RESPONSE_BYTES = 64 * 1024

#: Base secret of the webhook signatures (``X-Nommer-Signature``, see
#: ``nommer.core.webhook_signing``): each API key's signing secret is derived
#: from it (``nommer keys webhook-secret KEY_ID`` shows one). None: a random
#: one is generated at first use into ``DATA_DIR/webhook_signing.secret``.
#: At least 32 printable ASCII characters.
WEBHOOK_SIGNING_SECRET = None

# --- Event log (GET /job/<id>/events) -------------------------------------------

#: Events one job's log keeps in full; past it PROGRESS and WEBHOOK events are
#: dropped, and the others kept up to twice this (nommer.core.events.bounds).
MAX_EVENTS_PER_JOB = 500

# --- Live event stream (GET /events, nommer.feederd.sse) ------------------------

#: Last events feederd keeps in memory for streams that reconnect with
#: Last-Event-ID; a client further behind gets a fresh snapshot (event: reset).
SSE_BUFFER_EVENTS = 10000

#: Seconds between heartbeat comments on every stream (proxies and load
#: balancers close connections idle for longer than their timeout).
SSE_HEARTBEAT_S = 15.0

#: Bytes a stream may fall behind (written while its connection's buffer is
#: full) before that client is disconnected, so it slows no one else.
SSE_MAX_BUFFER_BYTES = 1024 * 1024

#: Event streams open at once on one feederd, at most (503 past it), and per
#: API key (or for the anonymous caller) at most (429 past it).
SSE_MAX_CLIENTS = 1000
SSE_MAX_CLIENTS_PER_KEY = 50

#: Jobs not yet final a stream's first snapshot lists at most (newest first),
#: and final ones (most recently changed first).
SSE_SNAPSHOT_JOBS = 500
SSE_SNAPSHOT_FINAL_JOBS = 50

#: Lifetime of a stream token (POST /events/token, for browsers' EventSource,
#: which cannot send an Authorization header), seconds.
SSE_TOKEN_TTL_S = 60.0

# --- Encoding -----------------------------------------------------------------

#: ffmpeg and ffprobe executables (looked up on PATH when not absolute).
FFMPEG_BIN = "ffmpeg"
FFPROBE_BIN = "ffprobe"

#: An ffmpeg built with libvmaf, for VMAF (quality metrics, compare outputs,
#: target quality); looked up on PATH when not absolute. None: the binary of
#: the imageio-ffmpeg wheel (``pip install 'nommer[vmaf]'``, GPLv3) when it
#: is installed. PSNR and SSIM use FFMPEG_BIN. Without either, jobs asking
#: for VMAF are refused at submit.
VMAF_FFMPEG_BIN = None

#: Runtime limit of one ffmpeg or ffprobe run, seconds. Past it the process
#: gets SIGTERM, then SIGKILL after FFMPEG_KILL_GRACE_S.
FFMPEG_TIMEOUT_S = 6 * 3600.0
FFMPEG_KILL_GRACE_S = 5.0

#: Sandbox every ffmpeg and ffprobe runs in: ``"bwrap"`` (bubblewrap: no
#: network, only the job's scratch writable, nothing else of the host visible,
#: empty environment) or ``"none"`` (for platforms without it; a warning is
#: logged at every start). A worker whose sandbox cannot start refuses to start.
FFMPEG_SANDBOX = "bwrap"

#: The bubblewrap executable (looked up on PATH when not absolute).
BWRAP_BIN = "bwrap"

#: Resource limits (setrlimit) of every sandboxed ffmpeg/ffprobe: CPU time,
#: seconds; address space, bytes; size of any file it writes, bytes (the
#: output cap MAX_OUTPUT_BYTES is also passed as ``-fs``); processes and
#: threads of the worker's user.
FFMPEG_RLIMIT_CPU_S = 24 * 3600
FFMPEG_RLIMIT_AS_BYTES = 16 * 1024 ** 3
FFMPEG_RLIMIT_FSIZE_BYTES = 64 * 1024 ** 3
FFMPEG_RLIMIT_NPROC = 4096

#: Largest source a worker downloads or reads, bytes; larger ones end the job
#: in ERROR.
MAX_SOURCE_BYTES = 50 * 1024 ** 3

#: Largest output ffmpeg may write, bytes (``-fs``; the file-size rlimit backs it).
MAX_OUTPUT_BYTES = 50 * 1024 ** 3

#: An output may last at most this many times the source's duration (plus
#: 10 s): ffmpeg is given ``-t`` accordingly, so a padding filter cannot write
#: forever.
MAX_OUTPUT_DURATION_FACTOR = 2.0

#: Free space the scratch directory must have before a job starts, bytes (the
#: source's size is added when known). A worker short of it, or one that runs
#: out of space (ENOSPC), releases the job to another worker.
SCRATCH_MIN_FREE_BYTES = 1024 ** 3

#: Chunked encoding (split, encode the chunks on many workers, merge): a
#: declarative job is chunked when its source lasts at least this many seconds,
#: unless its body says ``"chunking": false`` (``true`` or an object asks for it
#: whatever the length). None: only when a job asks.
CHUNKING_MIN_SOURCE_S = 600.0
#: Length of a chunk aimed at, seconds (a job's ``chunking.target_s`` overrides it).
CHUNK_TARGET_S = 30.0
#: Shortest and longest chunk, seconds (``chunking.min_s`` / ``max_s``).
CHUNK_MIN_S = 2.0
CHUNK_MAX_S = 120.0
#: The planner makes chunks of about CHUNK_TARGET_S, and at least 4 per
#: worker (MAX_NUM_WORKERS) so a slow chunk does not gate the job, within
#: the lengths above.

#: Progress is written to the job store at most this often, seconds.
PROGRESS_WRITE_INTERVAL_S = 1.0

#: Nommer classes a job may name: a list of dotted paths. Anything else is
#: refused at submit. OutputsNommer runs declarative jobs (``outputs`` or a
#: preset); without it, only the 2011 ``job_options`` form is accepted.
ALLOWED_NOMMERS = ["nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                   "nommer.workerd.nommers.outputs.OutputsNommer"]

#: Old dotted paths accepted for compatibility, mapped to the class they mean.
NOMMER_ALIASES = {
    "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer":
        "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
}

# --- Presets (GET /presets; a job's "preset") ---------------------------------

#: A directory of the operator's presets, one ``NAME.json`` file each
#: (``{"description": ..., "outputs": [...]}``, optionally ``"requires":
#: [field, ...]``; or the 2011 form ``{"description", "nommer", "options"}``).
#: A preset of a built-in preset's name replaces it. None: built-in presets only.
#: Every file is validated when the settings are loaded.
PRESETS_DIR = None

#: The operator's presets in the nomconf: ``{NAME: preset object}`` (the same
#: objects as PRESETS_DIR's files); they replace built-in presets and
#: PRESETS_DIR's of the same name.
PRESETS = {}

# --- Storage ------------------------------------------------------------------

#: URI scheme -> storage backend class (dotted path).
STORAGE_BACKENDS = {
    "file": "nommer.core.storage.file.FileStorage",
    "http": "nommer.core.storage.http.HTTPStorage",
    "https": "nommer.core.storage.http.HTTPStorage",
    "s3": "nommer.core.storage.s3.S3Storage",
}

#: Directories file:// sources and destinations must lie under. ``None`` means
#: ``./media`` in the working directory feederd/workerd were started in
#: (feederd creates it when missing). A root may not contain DATA_DIR, the
#: scratch directory, the config file or nommer's installed code: feederd
#: and workerd refuse to start if one does.
FILE_STORAGE_ROOTS = None

#: S3 buckets sources and destinations may name; ``None`` allows any bucket
#: the credentials reach. Others are refused at submit (BADINPUT).
S3_ALLOWED_BUCKETS = None

#: Networks (CIDR strings such as ``"10.0.0.0/8"``) that http(s) sources and
#: webhooks may reach although they are loopback, private, link-local,
#: unique-local, multicast or unspecified. Empty: only public addresses.
#: Checked after DNS resolution and on every redirect.
ALLOWED_PRIVATE_NETWORKS = []

#: An http(s) download that receives no byte for this long fails, seconds
#: (a transient failure: the job is retried).
HTTP_DOWNLOAD_TIMEOUT_S = 60.0

# --- AWS -----------------------------------------------------------------------

#: Credentials. None (recommended) uses boto3's default chain: environment,
#: profile, instance role. Setting them here is the original's way.
AWS_ACCESS_KEY_ID = None
AWS_SECRET_ACCESS_KEY = None

#: Region of every AWS client. None: boto3's default, else us-east-1.
AWS_REGION = None

#: One endpoint URL for every AWS client (a local moto or DynamoDB Local), or None.
AWS_ENDPOINT_URL = None

#: Per-service endpoint overrides, e.g. ``{"dynamodb": "http://127.0.0.1:8000"}``.
AWS_ENDPOINT_URLS = {}

#: Most threads one AWS-backed part (store, queue, S3 storage) runs boto3 calls in.
AWS_MAX_THREADS = 8

#: Create missing tables, domains, queues and buckets on first use (or run
#: ``nommer aws setup`` once and set this to False).
AWS_CREATE_RESOURCES = True

#: DynamoDB table holding the jobs.
DYNAMODB_JOB_TABLE = "nommer_jobs"

#: Finished jobs expire from DynamoDB this long after they finish (a TTL
#: attribute), seconds; None keeps them forever.
DYNAMODB_JOB_TTL_S = None

#: DynamoDB table of the jobs' event logs; None: DYNAMODB_JOB_TABLE + "_events".
DYNAMODB_EVENTS_TABLE = None

#: SimpleDB domain of the jobs' event logs; None: SIMPLEDB_JOB_STATE_DOMAIN + "_events".
SIMPLEDB_EVENTS_DOMAIN = None

#: S3 server-side encryption of outputs: None, "AES256" or "aws:kms" (with S3_SSE_KMS_KEY_ID).
S3_SERVER_SIDE_ENCRYPTION = None
S3_SSE_KMS_KEY_ID = None

#: S3 storage class of outputs (e.g. "STANDARD_IA"), None for the bucket default.
S3_STORAGE_CLASS = None

#: Key (Fernet, urlsafe base64 of 32 bytes) encrypting credentials given inside
#: source/destination URIs (``s3://KEY:SECRET@bucket/key``) in the job store.
#: None: such URIs are refused; use the instance role or the default chain.
JOB_CREDENTIALS_KEY = None

# --- Worker registry ------------------------------------------------------------

#: A worker heartbeats to the registry (a table or domain of its own, beside
#: the jobs) every HEARTBEAT_INTERVAL_S. With the EC2 fleet, feederd terminates
#: an instance whose worker has not heartbeated for this long, seconds (a
#: zombie you still pay for).
WORKER_HEARTBEAT_TIMEOUT_S = 180.0

#: Registry entries of workers gone for this long are deleted, seconds.
WORKER_FORGET_AFTER_S = 86400.0

#: DynamoDB table of the worker registry.
DYNAMODB_WORKER_TABLE = "nommer_workers"

#: DynamoDB table and SimpleDB domain of the API keys (hashes only); the key
#: store follows JOB_STORE_BACKEND (SQLite keeps them in DATA_DIR).
DYNAMODB_KEY_TABLE = "nommer_api_keys"
SIMPLEDB_KEY_DOMAIN = "nommer_api_keys"

# --- EC2 fleet (FLEET_BACKEND = "ec2") ----------------------------------------------

#: Base URL of the instance metadata service (IMDSv2). Workers started with
#: ``--local`` never ask it.
EC2_METADATA_URL = "http://169.254.169.254"

#: AMI the workers boot from (built with deploy/packer); required for "ec2".
EC2_AMI_ID = None

#: Instance types to try, in order: when one has no spot capacity, the next.
EC2_INSTANCE_TYPES = ["c7i.large"]

#: Subnets to launch into, tried in order after the instance types (one per
#: AZ spreads the fleet); empty: the default VPC's choice.
EC2_SUBNET_IDS = []

#: Security group ids of the workers (with EC2_SUBNET_IDS); EC2_SECURITY_GROUPS
#: (names, default VPC only) is the original's way.
EC2_SECURITY_GROUP_IDS = []

#: Instance profile (name or ARN) of the workers: the role that lets them read
#: the queues, the job store and S3. No keys are ever put in user data.
EC2_IAM_INSTANCE_PROFILE = None

#: Most instances (running and booting) the fleet ever has at once.
MAX_NUM_EC2_INSTANCES = 3

#: ``"spot"`` or ``"on-demand"``: the market instances are launched in.
EC2_MARKET = "spot"

#: Highest spot price paid, USD per instance-hour, as a string ("0.05"); None
#: pays up to the on-demand price (AWS's default and recommendation).
SPOT_MAX_PRICE = None

#: When no instance type and subnet has spot capacity, launch on-demand instead.
EC2_ON_DEMAND_FALLBACK = False

#: Name of this fleet, in the ``nommer:fleet`` tag of every instance it
#: launches: instances are counted by this tag, never by AMI id.
EC2_FLEET_NAME = "nommer"

#: An instance that has not registered (heartbeated) this long after its
#: launch is terminated, seconds (it will never come up).
EC2_BOOT_TIMEOUT_S = 600.0

#: Spot price used for the cost estimate when DescribeSpotPriceHistory gives
#: none, USD per instance-hour; None: no estimate.
EC2_SPOT_PRICE_PER_HOUR = None

#: How often a worker on EC2 polls the metadata for a spot interruption notice
#: or a rebalance recommendation, seconds (notice comes two minutes ahead).
SPOT_INTERRUPTION_POLL_S = 5.0

# --- kept so old nomconf files load ----------------------------------------------
CONFIG_S3_BUCKET = "nommer_config"
SIMPLEDB_JOB_STATE_DOMAIN = "media_nommer"
SIMPLEDB_EC2_NOMMER_STATE_DOMAIN = "media_nommer_ec2nommer_state"
EC2_KEY_NAME = None
EC2_SECURITY_GROUPS = ["media_nommer"]
FEEDERD_ALLOW_EC2_LAUNCHES = True
