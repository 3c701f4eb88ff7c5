"""Independent PyTorch reference of strait's model: Hugging Face's LlamaForCausalLM in fp32.

The module layout and parameter names follow transformers' modeling_llama.py, so that a
state dict exported by strait (or by Hugging Face) loads by name and a reader can check the
conventions line by line against the original:

  * RMSNorm is computed in fp32 and the weight is applied after normalisation.
  * Rotary embeddings use the "rotate_half" convention (the two halves of each head are the
    pair being rotated), not the interleaved (adjacent pairs) one of the original Llama code.
  * Attention is plain causal softmax attention with scores scaled by 1/sqrt(head_dim).
  * The MLP is SwiGLU: down(silu(gate(x)) * up(x)); no linear layer has a bias.

It also reads and writes safetensors itself, because the safetensors package is not available.
"""

import json
import math
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The safetensors format is little-endian; the readers and writers below move raw bytes
# between the file and numpy/torch buffers, which is only correct on a little-endian host.
if sys.byteorder != "little":
    raise ImportError("llama_ref's safetensors I/O assumes a little-endian host")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6  # Hugging Face's LlamaConfig default
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, cfg):
        """Builds a config from an HF-style config.json dict, rejecting any feature this
        reference does not implement rather than silently computing something else."""
        required = ["hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "vocab_size", "max_position_embeddings"]
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ValueError(f"config is missing {', '.join(missing)}")
        if cfg.get("model_type", "llama") != "llama":
            raise ValueError(f"model_type {cfg['model_type']!r} is not 'llama'")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (only 'silu')")
        heads = cfg["num_attention_heads"]
        if cfg.get("num_key_value_heads", heads) != heads:
            raise ValueError("grouped-query attention (num_key_value_heads != "
                             "num_attention_heads) is not supported")
        if cfg.get("rope_scaling") is not None:
            raise ValueError("rope_scaling is not supported")
        if cfg.get("attention_bias", False) or cfg.get("mlp_bias", False):
            raise ValueError("attention_bias / mlp_bias are not supported")
        config = cls(
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=int(heads),
            vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg["max_position_embeddings"]),
            rms_norm_eps=float(cfg.get("rms_norm_eps", cls.rms_norm_eps)),
            rope_theta=float(cfg.get("rope_theta", cls.rope_theta)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", cls.tie_word_embeddings)),
        )
        for name in required:
            if getattr(config, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if config.hidden_size % heads or config.head_dim % 2:
            raise ValueError("hidden_size must split into heads of an even head_dim")
        if cfg.get("head_dim", config.head_dim) != config.head_dim:
            raise ValueError("head_dim must equal hidden_size / num_attention_heads")
        return config

    @classmethod
    def from_json(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        # As in HF: normalise in fp32 (even under autocast), cast back, then scale.
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def rotary_cos_sin(seq_len, head_dim, theta, device=None):
    """cos and sin tables [seq_len, head_dim] for positions 0..seq_len-1, computed in fp32
    like HF's LlamaRotaryEmbedding: each frequency appears twice, once per half."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64,
                                             device=device).float() / head_dim))
    positions = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    """Rotates half the hidden dims of the input: (x1, x2) -> (-x2, x1)."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    # cos/sin are [T, D] and broadcast over the leading [B, H] dims of q and k.
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class LlamaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        c = config.hidden_size
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)

    def forward(self, hidden_states, cos, sin):
        bsz, q_len, _ = hidden_states.shape
        shape = (bsz, q_len, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)

        attn_weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        # Position i may attend to j <= i only. -inf (HF uses dtype min) gives the same
        # probabilities: the diagonal is never masked, so no row is entirely masked.
        future = torch.ones(q_len, q_len, dtype=torch.bool,
                            device=hidden_states.device).triu(diagonal=1)
        attn_weights = attn_weights.masked_fill(future, float("-inf"))
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(q.dtype)
        attn_output = torch.matmul(attn_weights, v)

        attn_output = attn_output.transpose(1, 2).reshape(bsz, q_len, -1)  # [B, T, C]
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        c, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(c, f, bias=False)
        self.up_proj = nn.Linear(c, f, bias=False)
        self.down_proj = nn.Linear(f, c, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden_states, cos, sin):
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states),
                                                       cos, sin)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class LlamaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config)
                                    for _ in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids):
        cos, sin = rotary_cos_sin(input_ids.shape[1], self.config.head_dim,
                                  self.config.rope_theta, input_ids.device)
        hidden_states = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin)
        return self.norm(hidden_states)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            # One Parameter under two names: named_parameters() reports it once, as
            # model.embed_tokens.weight, and its gradient sums both uses.
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids):
        """Returns fp32 logits [B, T, V] for int64 input_ids [B, T]."""
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds "
                             f"max_position_embeddings {self.config.max_position_embeddings}")
        return self.lm_head(self.model(input_ids)).float()

    @staticmethod
    def loss(logits, targets):
        """Mean cross-entropy over all B*T positions; targets are already shifted."""
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                               targets.reshape(-1))

    def hf_state_dict(self):
        """The parameters under their HF names; lm_head.weight is left out when tied,
        exactly as an HF safetensors export does."""
        return {name: p for name, p in self.named_parameters()}


# --------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------

# dtype name -> numpy dtype of the stored bytes. BF16 is read as raw int16 bits and
# reinterpreted; U16 has no torch 1.13 dtype and is widened to int32 on load.
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<i2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"), "BOOL": np.dtype("?"),
}
_TORCH_TO_ST = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
                torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the reference implementation enforces


class SafetensorsError(ValueError):
    pass


def read_safetensors(path):
    """Returns ({name: tensor}, metadata dict) from a safetensors file, after checking
    that the header is well formed and that the tensors exactly tile the data section."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise SafetensorsError(f"{path}: too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(_MAX_HEADER_BYTES, len(blob) - 8):
        raise SafetensorsError(f"{path}: header length {header_len} exceeds the file")
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + header_len:]

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")

    spans = []
    tensors = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: entry needs exactly dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise SafetensorsError(f"{where}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: bad shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(data)):
            raise SafetensorsError(f"{where}: bad data_offsets {offsets!r}")
        np_dtype = _ST_DTYPES[dtype]
        numel = math.prod(shape)
        if offsets[1] - offsets[0] != numel * np_dtype.itemsize:
            raise SafetensorsError(f"{where}: {offsets[1] - offsets[0]} bytes do not hold "
                                   f"{dtype} {shape}")
        spans.append((offsets[0], offsets[1], name))
        array = np.frombuffer(data[offsets[0]:offsets[1]], dtype=np_dtype).reshape(shape)
        # Copy out of the file buffer (widening U16), so every tensor owns writable memory.
        tensor = torch.from_numpy(array.astype(np.int32) if dtype == "U16" else array.copy())
        tensors[name] = tensor.view(torch.bfloat16) if dtype == "BF16" else tensor

    # Like the reference implementation: no gaps, no overlaps, no trailing bytes.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorsError(f"{path}: tensor {name!r} starts at {begin}, expected "
                                   f"{position} (gap or overlap)")
        position = end
    if position != len(data):
        raise SafetensorsError(f"{path}: {len(data) - position} bytes after the last tensor")
    return tensors, metadata


def load_safetensors(path):
    """Returns {name: tensor} from a safetensors file (see read_safetensors)."""
    return read_safetensors(path)[0]


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} to path in the safetensors format. A numpy uint16 array is
    accepted too and stored as U16 (torch 1.13 has no such dtype)."""
    entries = []
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, np.ndarray) and value.dtype == np.uint16:
            dtype, shape, raw = "U16", list(value.shape), value.astype("<u2").tobytes()
        elif isinstance(value, torch.Tensor) and value.dtype in _TORCH_TO_ST:
            t = value.detach().cpu().contiguous()
            dtype, shape = _TORCH_TO_ST[t.dtype], list(t.shape)
            # reshape(-1) so 0-d tensors can be reinterpreted as bytes too.
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        else:
            raise SafetensorsError(f"tensor {name!r}: unsupported type "
                                   f"{getattr(value, 'dtype', type(value))}")
        entries.append((name, dtype, shape, raw))

    header = {}
    offset = 0
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces to a multiple of 8 so the data section is aligned, as the
    # reference writer does.
    header_bytes += b" " * (-len(header_bytes) % 8)

    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for _, _, _, raw in entries:
            f.write(raw)


# --------------------------------------------------------------------------------------
# Loading an HF-style model directory
# --------------------------------------------------------------------------------------

def load_hf_dir(directory):
    """Builds the fp32 model from directory/config.json and directory/model.safetensors.
    The file must hold exactly the model's parameters (no lm_head.weight when tied) with
    the right shapes; F32, BF16 and F16 weights are upcast to fp32."""
    config = LlamaConfig.from_json(os.path.join(directory, "config.json"))
    path = os.path.join(directory, "model.safetensors")
    weights = load_safetensors(path)
    model = LlamaForCausalLM(config)
    params = model.hf_state_dict()

    missing = sorted(set(params) - set(weights))
    unexpected = sorted(set(weights) - set(params))
    if missing or unexpected:
        raise SafetensorsError(f"{path}: missing {missing or 'nothing'}, "
                               f"unexpected {unexpected or 'nothing'}")
    with torch.no_grad():
        for name, param in params.items():
            w = weights[name]
            if tuple(w.shape) != tuple(param.shape):
                raise SafetensorsError(f"{path}: {name} has shape {list(w.shape)}, "
                                       f"expected {list(param.shape)}")
            if not w.is_floating_point():
                raise SafetensorsError(f"{path}: {name} has non-float dtype {w.dtype}")
            param.copy_(w.to(torch.float32))
    return model
