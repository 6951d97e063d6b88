"""Workloads of ``tools/benchmark.py``: one timed call per figure, on whatever ``find_plugin`` is
importable (this checkout, or an older one put first on ``PYTHONPATH`` by ``--baseline``).

A :class:`Workloads` object builds its models once (seeded), then ``setup(figure)`` prepares a
figure; ``call(figure)`` runs one timed call of it and returns ``{"time_s", "cpu_s"}``:
wall-clock seconds and CPU seconds of the process (all threads; steadier than wall-clock time
when other processes load the machine); ``measure(figure)`` runs one call for its working memory
``{"mem_mb"}`` (peak RSS over the call minus RSS before it on CPU, read from
``/proc/self/status`` after giving freed heap memory back with ``malloc_trim`` and resetting the
peak through ``/proc/self/clear_refs``; on CUDA ``max_memory_allocated`` minus the allocation
before the call). The two are apart because the trim makes the next call fault in its whole
working set again, which a loop of calls does not pay: timed calls run as they would in a loop.
Figures an older checkout cannot run raise :class:`Unsupported` at ``setup``.

Figures (``--quick`` shrinks every size; full size = the released Focal-T model):

* ``interface/<task>``: one eval pass of the interface on random pixel-decoder outputs of an
  ``S x S`` image, for ``seg`` (generic segmentation), ``grounding`` (3 phrases), ``spatial``
  (interactive, 3 prompts), ``retrieval``, ``interleave`` (1 visual + 1 text entity) and
  ``fused`` (all of them, and the class prompt, in one pass);
* ``vision/backbone``, ``vision/pixel_decoder``: the frozen vision side;
* ``image_path``: uint8 image -> detectron2 outputs (``sem_seg``, ``panoptic_seg``,
  ``instances``) through the detectron2 ``FIND`` meta-architecture (normalise, backbone, pixel
  decoder, interface, generic post-processing at the input size); a checkout without it runs
  the same steps composed from its core functions;
* ``train_step``: forward + losses (labels, masks, grounding, retrieval) + backward + AdamW step
  of the interface at batch ``--train-batch``, on cached vision features and cached projected
  text features (the frozen encoders do not run, as in FIND training with caches);
* ``gallery/<exact|faiss>/<N>``: one query (top-10) against N L2-normalised 512-d embeddings,
  exact (streamed torch) or through :class:`find_plugin.tasks.gallery.FaissGallery`; the build
  time and, for faiss, recall@10 against exact search are reported with it.

Precision: models and inputs are float32; ``dtype`` float16 / bfloat16 runs every figure but the
galleries under ``torch.autocast`` of that dtype (mixed precision, as detectron2's AMP).
"""

import ctypes
import inspect
import re
import time
import warnings
from typing import Callable, Dict, List

import torch

TASKS = ("seg", "grounding", "spatial", "retrieval", "interleave", "fused")
GALLERY_KS = 10


class Unsupported(Exception):
    """The importable find_plugin cannot run this figure."""


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _trim() -> None:
    try:  # give freed heap memory back, so that "RSS before" does not hide the next call's peak
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class _Meter:
    """Time of one call, and with ``memory`` its working memory in MB (module docstring)."""

    def __init__(self, device: torch.device, memory: bool = False):
        self.device, self.memory = device, memory
        self.mem_mb = None

    def __enter__(self):
        if self.device.type == "cuda":  # the timed call starts with nothing queued before it
            torch.cuda.synchronize(self.device)
        if self.memory and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.memory:
            _trim()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
            self.before = _status_kb("VmRSS") * 1024
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.time_s = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.c0
        if self.memory:
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device)
            else:
                peak = _status_kb("VmHWM") * 1024
            self.mem_mb = max(peak - self.before, 0) / 2**20
        return False


def sizes(quick: bool, size: int) -> dict:
    """Model and input sizes: the released Focal-T model, or a tiny one for ``--quick``."""
    if not quick:
        return dict(size=size, backbone={}, pixel_decoder={}, interface={}, classes=133)
    return dict(
        size=size,
        backbone=dict(embed_dim=16, depths=[1, 1, 1, 1]),
        pixel_decoder=dict(conv_dim=32, mask_dim=32, transformer_enc_layers=1),
        interface=dict(
            hidden_dim=32,
            num_heads=4,
            dim_feedforward=64,
            num_layers=2,
            num_queries=8,
            mask_dim=32,
            dim_proj=32,
            dim_text=32,
            num_memories=4,
            in_channels=32,  # dropped for checkouts whose interface has no such argument
        ),
        classes=5,
    )


def autocast_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``torch.autocast(device_type, dtype=dtype)`` really autocasts in this torch (CPU
    autocast of torch 2.3 supports bfloat16 only, and disables itself with a warning for
    float16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast(device_type, dtype=dtype):
            if device_type == "cpu":
                return torch.is_autocast_cpu_enabled()
            return torch.is_autocast_enabled()


def _under_autocast(fn: Callable[[], object], device_type: str, dtype: torch.dtype):
    def run():
        with torch.autocast(device_type, dtype=dtype):
            return fn()

    return run


def figure_names(gallery_sizes: List[int]) -> List[str]:
    """Every figure, in the order they run."""
    names = [f"interface/{t}" for t in TASKS]
    names += ["vision/backbone", "vision/pixel_decoder", "image_path", "train_step"]
    for n in gallery_sizes:
        names += [f"gallery/exact/{n}", f"gallery/faiss/{n}"]
    return names


class Workloads:
    """Models and inputs of every figure for the importable find_plugin (see module docstring)."""

    def __init__(self, *, quick, size, dtype, device, seed, train_batch, gallery_queries):
        import find_plugin
        from find_plugin.core.interface import FINDInterface
        from find_plugin.model import build_find_model

        self.root = find_plugin.__file__
        # models and inputs stay float32; a lower ``dtype`` is autocast around each call (as
        # detectron2's AMP runs a model), see :func:`autocast_supported`
        self.device, self.dtype = torch.device(device), torch.float32
        self.autocast = None if dtype == "float32" else getattr(torch, dtype)
        self.seed, self.train_batch = int(seed), int(train_batch)
        self.gallery_queries = int(gallery_queries)
        self.quick = bool(quick)
        cfg = sizes(quick, size)
        self.size, self.num_classes = cfg["size"], cfg["classes"]
        accepted = inspect.signature(FINDInterface.__init__).parameters
        cfg["interface"] = {k: v for k, v in cfg["interface"].items() if k in accepted}
        torch.manual_seed(self.seed)
        self.model = build_find_model(
            "focalt_llama",
            backbone=cfg["backbone"],
            pixel_decoder=cfg["pixel_decoder"],
            interface=cfg["interface"],
        )
        self.model.to(self.device, self.dtype).eval()
        self.iface = self.model.interface
        self.dim = self.iface.hidden_dim
        try:  # token padding key and "no entity" id of this checkout's interface API
            from find_plugin.core.conventions import NO_ITEM

            self.pad_key, self.no_entity = "token_padding", NO_ITEM
        except ImportError:
            self.pad_key, self.no_entity = "token_mask", -4
        # inference reads only the last layer: skip the per-layer outputs where the API allows it
        forward = inspect.signature(FINDInterface.forward).parameters
        self.infer = {"aux_outputs": False} if "aux_outputs" in forward else {}
        self.gen = torch.Generator().manual_seed(self.seed)
        self._ready: Dict[str, Callable[[], object]] = {}
        self._vision = None

    # ------------------------------------------------------------------ inputs
    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device, self.dtype)

    def vision_features(self):
        """Cached pixel-decoder outputs of one random image: (3 levels, mask_features)."""
        if self._vision is None:
            s, c = self.size, self.iface.in_channels if hasattr(self.iface, "in_channels") else None
            c = c or self.dim
            feats = [self._randn(1, c, s // st, s // st) for st in (32, 16, 8)]
            mask_dim = self.iface.heads.mask_embed.layers[-1].out_features
            self._vision = (feats, self._randn(1, mask_dim, s // 4, s // 4))
        return self._vision

    def task_inputs(self, name: str, batch: int = 1) -> dict:
        """Interface inputs of one figure (``fused``: every task, and the class prompt)."""
        s, pad = self.size, self.pad_key

        def tokens(n):
            return self._randn(batch, n, self.dim)

        def no_pad(n):
            return torch.zeros(batch, n, dtype=torch.bool, device=self.device)

        def prompts(n):
            masks = torch.zeros(n, s, s, dtype=torch.bool)
            for k in range(n):  # small boxes along the diagonal
                y, x = (s // 8) * (k + 1) // 2, (s // 6) * (k + 1) // 2
                masks[k, y : y + s // 16 + 2, x : x + s // 16 + 2] = True
            return [masks.clone() for _ in range(batch)]

        def empty(n):
            return [torch.zeros(n, s, s, dtype=torch.bool) for _ in range(batch)]

        ent = [self.no_entity, 0, 0, self.no_entity, 1, 1] + [self.no_entity] * 14
        every = {
            "class": {"tokens": tokens(12), pad: no_pad(12)},
            "grounding": {
                "tokens": tokens(24),
                pad: no_pad(24),
                "token_index": (torch.arange(24) // 8).expand(batch, 24).to(self.device),
            },
            "spatial": {"pos_masks": prompts(3), "neg_masks": empty(3)},
            "retrieval": {"tokens": tokens(20), pad: no_pad(20)},
            "interleave": {
                "tokens": tokens(20),
                pad: no_pad(20),
                "token_entity": torch.tensor(ent).expand(batch, 20).to(self.device),
                "entity_is_visual": torch.tensor([[True, False]] * batch, device=self.device),
                "pos_masks": [torch.cat([p[:1], torch.zeros_like(p[:1])]) for p in prompts(1)],
                "neg_masks": empty(2),
            },
        }
        if name == "seg":
            return {}
        return every if name == "fused" else {name: every[name]}

    def class_bank(self) -> torch.Tensor:
        return self._randn(self.num_classes + 1, self.dim)

    # ------------------------------------------------------------------ figures
    def setup(self, figure: str) -> dict:
        """Prepare ``figure``; returns its extra facts (what it runs, build time, recall)."""
        kind = figure.split("/")[0]
        builder = {
            "interface": self._setup_interface,
            "vision": self._setup_vision,
            "image_path": self._setup_image_path,
            "train_step": self._setup_train_step,
            "gallery": self._setup_gallery,
        }[kind]
        fn, facts = builder(figure)
        if self.autocast is not None and kind != "gallery":  # vector search stays float32
            fn = _under_autocast(fn, self.device.type, self.autocast)
        self._ready[figure] = fn
        return facts

    def release(self, figure: str) -> None:
        self._ready.pop(figure, None)

    def call(self, figure: str) -> dict:
        """One timed call: ``{"time_s", "cpu_s"}``."""
        with _Meter(self.device) as m:
            self._ready[figure]()
        return {"time_s": m.time_s, "cpu_s": m.cpu_s}

    def measure(self, figure: str) -> dict:
        """One call for its working memory: ``{"mem_mb"}`` (its time is not a figure)."""
        with _Meter(self.device, memory=True) as m:
            self._ready[figure]()
        return {"mem_mb": m.mem_mb}

    def _setup_interface(self, figure):
        task = figure.split("/")[1]
        feats, mask_features = self.vision_features()
        tasks, bank = self.task_inputs(task), self.class_bank()

        @torch.no_grad()
        def fn():
            g = torch.Generator().manual_seed(self.seed)  # same prompt points every call
            return self.iface(
                list(feats), mask_features, tasks, class_bank=bank, generator=g, **self.infer
            )

        return fn, {"runs": f"interface eval pass, tasks {sorted(tasks) or ['seg']} {self.infer}"}

    def _images(self, batch=1) -> torch.Tensor:
        return self._randn(batch, 3, self.size, self.size)

    def _setup_vision(self, figure):
        images = self._images()
        backbone, decoder = self.model.backbone, self.model.pixel_decoder
        if figure.endswith("backbone"):
            return torch.no_grad()(lambda: backbone(images)), {"runs": "FocalNet backbone"}
        with torch.no_grad():
            maps = backbone(images)
        return torch.no_grad()(lambda: decoder.forward_features(maps)), {
            "runs": "pixel decoder (transformer encoder + FPN + mask features)"
        }

    def _setup_image_path(self, figure):
        s = self.size
        image = torch.randint(0, 256, (3, s, s), generator=self.gen, dtype=torch.uint8)
        is_thing = [k % 2 == 0 for k in range(self.num_classes)]
        bank = self.class_bank()
        try:
            from find_plugin.core.criterion import FINDCriterion
            from find_plugin.d2.meta_arch import FIND
            from find_plugin.tasks.generic import GenericSegmentationTask
        except ImportError:
            return self._image_path_composed(image, is_thing, bank)
        generic = GenericSegmentationTask(class_names=[f"c{k}" for k in range(self.num_classes)])
        d2 = FIND(
            backbone=self.model.backbone,
            pixel_decoder=self.model.pixel_decoder,
            interface=self.iface,
            criterion=FINDCriterion(num_classes=self.num_classes),
            tasks={"generic": generic},
            train_tasks=[],
            is_thing=is_thing,
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        ).to(self.device)
        d2.eval()
        d2._eval_bank = bank  # the class bank is text-encoder output: cached, not timed
        record = {"image_size": (s, s), "labels": [], "masks": None}
        sample = generic.sample(record, generator=self.gen, encode_text=None, training=False)
        inputs = [{"image": image, "height": s, "width": s, "find_samples": {"generic": sample}}]
        return torch.no_grad()(lambda: d2(inputs)), {"runs": "detectron2 FIND meta-architecture"}

    def _image_path_composed(self, image, is_thing, bank):
        from find_plugin.core import postprocess as pp

        mean = torch.tensor([123.675, 116.28, 103.53], device=self.device).view(-1, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375], device=self.device).view(-1, 1, 1)
        s = self.size

        @torch.no_grad()
        def fn():
            x = ((image.to(self.device).float() - mean) / std)[None].to(self.dtype)
            vision = self.model.extract_features(x)
            out = self.iface(
                vision["multi_scale_features"], vision["mask_features"], {}, class_bank=bank
            )
            cls = out["pred_logits"][0]
            masks = pp.resize_mask_logits(
                out["pred_masks"][0], padded_size=(s, s), image_size=(s, s), output_size=(s, s)
            )
            pp.semantic_inference(cls, masks)
            pp.panoptic_inference(cls, masks, is_thing=is_thing)
            pp.instance_inference(cls, masks, is_thing=is_thing, panoptic_on=True)

        return fn, {"runs": "core composition (no detectron2 meta-architecture in this checkout)"}

    def _setup_train_step(self, figure):
        from find_plugin.core.criterion import FINDCriterion

        b, s = self.train_batch, self.size
        feats, mask_features = self.vision_features()
        feats = [f.expand(b, -1, -1, -1).contiguous() for f in feats]
        mask_features = mask_features.expand(b, -1, -1, -1).contiguous()
        tasks = self.task_inputs("fused", batch=b)
        tasks = {k: tasks[k] for k in ("grounding", "retrieval")}
        bank = self.class_bank()

        def box_masks(n, shift):
            m = torch.zeros(n, s, s, dtype=self.dtype, device=self.device)
            for k in range(n):
                y, x = (s // 5) * k // 2 + shift, (s // 4) * k // 2
                m[k, y : y + s // 3, x : x + s // 3] = 1
            return m

        targets = []
        for i in range(b):
            targets.append(
                {
                    "labels": torch.arange(3, device=self.device) % self.num_classes,
                    "masks": box_masks(3, 2 * i),
                    "grounding_masks": box_masks(3, i),
                    "caption_tokens": tasks["retrieval"]["tokens"][i],
                    "caption_valid": torch.ones(20, dtype=torch.bool, device=self.device),
                    "caption_mask": torch.ones(20, dtype=torch.bool, device=self.device),
                }
            )
        npts = 64 if self.quick else 12544
        criterion = FINDCriterion(
            num_classes=self.num_classes,
            losses=("labels", "masks", "groundings", "retrievals"),
            num_points=npts,
        ).to(self.device)
        params = [p for p in self.iface.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)

        def fn():
            self.iface.train()
            g = torch.Generator().manual_seed(self.seed)
            out = self.iface(list(feats), mask_features, tasks, class_bank=bank, generator=g)
            losses = criterion(out, targets, logit_scale=self.iface.logit_scale)
            sum(losses.values()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.iface.eval()

        return fn, {
            "runs": f"interface train step (seg + grounding + retrieval), batch {b}, {s}x{s}, "
            f"{npts} loss points, AdamW",
            "batch": b,
        }

    def _setup_gallery(self, figure):
        _, kind, n = figure.split("/")
        n, dim = int(n), 512
        try:
            from find_plugin.tasks.gallery import ExactGallery, FaissGallery, recall_at_k
        except ImportError as err:
            raise Unsupported(f"no find_plugin.tasks.gallery ({err})") from None
        data, queries = clustered_embeddings(n, self.gallery_queries + 1, dim, seed=self.seed)
        data, queries = data.to(self.device), queries.to(self.device)
        one = queries[:1]
        t0 = time.perf_counter()
        exact = ExactGallery.build(data)
        if kind == "exact":
            build = time.perf_counter() - t0
            return (lambda: exact.search(one, GALLERY_KS)), {
                "runs": f"{exact.describe()}, top-{GALLERY_KS}, 1 query, N={n}",
                "build_s": build,
            }
        t0 = time.perf_counter()
        gallery = FaissGallery.build(data.cpu(), seed=self.seed)
        build = time.perf_counter() - t0
        _, exact_idx = exact.search(queries[1:], GALLERY_KS)
        _, approx_idx = gallery.search(queries[1:].cpu(), GALLERY_KS)
        recall = recall_at_k(approx_idx, exact_idx.cpu())
        return (lambda: gallery.search(one.cpu(), GALLERY_KS)), {
            "runs": f"faiss {gallery.describe()}, top-{GALLERY_KS}, 1 query, N={n}",
            "build_s": build,
            "recall@10": recall,
            "recall_queries": self.gallery_queries,
        }


def clustered_embeddings(n: int, n_queries: int, dim: int, *, seed: int):
    """L2-normalised synthetic embeddings: a mixture of sqrt(n) directions with noise (real
    image/text embeddings are clustered; on structureless noise every approximate index degrades),
    and queries drawn from the same mixture. Returns (gallery [n, dim], queries [n_queries, dim]).
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(max(int(n**0.5), 2), dim, generator=g)
    centers = centers / centers.norm(dim=1, keepdim=True)

    def draw(m):
        out = torch.empty(m, dim)
        for s in range(0, m, 1 << 16):  # in chunks: no second n x dim temporary
            k = min(1 << 16, m - s)
            pick = torch.randint(0, len(centers), (k,), generator=g)
            x = centers[pick] + 0.06 * torch.randn(k, dim, generator=g)
            out[s : s + k] = x / x.norm(dim=1, keepdim=True)
        return out

    return draw(n), draw(n_queries)
