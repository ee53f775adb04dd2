"""PyTorch reference models for the difflow benchmarks (DESIGN section 13 reference configs).

Parameter names are module paths; the C side (include/difflow/nn.h) registers the same names
with PyTorch layouts (Linear weight [out,in], Conv2d weight [cout,cin,k,k]).

toy-mlp  (133,122 parameters)
    input concat(x[2], t) -> 3 features
    net.0  Linear(3,256)    1,024
    net.1  SiLU
    net.2  Linear(256,256) 65,792
    net.3  SiLU
    net.4  Linear(256,256) 65,792
    net.5  SiLU
    net.6  Linear(256,2)      514

fmnist-unet-s  (1,035,969 parameters; the literal reading of the spec gives exactly this)
    Reading (all convs 3x3 padding 1 with bias, except the 1x1 skips; GroupNorm(8, C, eps=1e-5)
    with affine weight/bias):
    temb(t):  s = sinusoidal(1000*t), 64-dim, s[k] = sin(1000 t f_k), s[32+k] = cos(1000 t f_k),
              f_k = exp(-ln(10000) k/32), k = 0..31
              temb = lin2(SiLU(lin1(s)))   -- NO activation after lin2; every ResBlock applies
              its own temb_proj Linear(128,cout) directly to temb (no SiLU in between).
    ResBlock(cin,cout)(h, temb):
              a = conv1(SiLU(gn1(h))) + temb_proj(temb)[:, :, None, None]
              a = conv2(SiLU(gn2(a)))
              return a + (skip(h) if cin != cout else h)      (skip = Conv1x1(cin,cout) w/ bias)
              params = 2cin + (9 cin cout + cout) + (128 cout + cout) + 2cout + (9 cout^2 + cout)
                       + [cin cout + cout if cin != cout]
              RB(32,32) = 22,752   RB(32,64) = 65,984   RB(64,64) = 82,368
              RB(128,64) = 127,616 RB(96,32) = 44,416
    forward(x, t):
      h = conv_in(x)                                  Conv3x3(1,32)
      down.0: res.0 RB(32,32), res.1 RB(32,32)   -> skip0 (32ch, 28x28), avgpool2 -> 14x14
      down.1: res.0 RB(32,64), res.1 RB(64,64)   -> skip1 (64ch, 14x14), avgpool2 -> 7x7
      down.2: res.0 RB(64,64), res.1 RB(64,64)   -> skip2 (64ch, 7x7),   no pool
      mid.0 RB(64,64), mid.1 RB(64,64)
      up.0 (level 2): h = cat([h, skip2], 1); res.0 RB(128,64), res.1 RB(64,64); nearest x2 -> 14
      up.1 (level 1): h = cat([h, skip1], 1); res.0 RB(128,64), res.1 RB(64,64); nearest x2 -> 28
      up.2 (level 0): h = cat([h, skip0], 1); res.0 RB(96,32),  res.1 RB(32,32); no upsample
      out = out_conv(SiLU(out_norm(h)))               GN(8,32), Conv3x3(32,1)
    Module-by-module parameter counts:
      temb.lin1  Linear(64,128)       8,320
      temb.lin2  Linear(128,128)     16,512
      conv_in    Conv3x3(1,32)          320
      down.0     2 x RB(32,32)       45,504
      down.1     RB(32,64)+RB(64,64) 148,352
      down.2     2 x RB(64,64)      164,736
      mid        2 x RB(64,64)      164,736
      up.0       RB(128,64)+RB(64,64) 209,984
      up.1       RB(128,64)+RB(64,64) 209,984
      up.2       RB(96,32)+RB(32,32)  67,168
      out_norm   GN(8,32)                64
      out_conv   Conv3x3(32,1)          289
      total                        1,035,969
    Full state_dict key list: bench/peers/unet_keys.txt (regenerate: python3 torch_models.py).

Flow matching (project convention): x_t = (1-t) x0 + t eps, t ~ U(0,1), u = eps - x0,
loss = mean((net(x_t, t) - u)^2). Sampling integrates dx/dt = net(x, t) from t=1 to t=0.
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

UNET_PARAMS = 1_035_969
DIT_PARAMS = 4_165_456
MLP_PARAMS = 133_122


# ----------------------------------------------------------------------------- toy-mlp

class ToyMLP(nn.Module):
    def __init__(self, dim=2, hidden=256, depth=3):
        super().__init__()
        layers = [nn.Linear(dim + 1, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], dim=1))


# ----------------------------------------------------------------------------- fmnist-unet-s

def sinusoidal_embedding(t, dim=64, t_scale=1000.0):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * k / half)
    arg = (t_scale * t.reshape(-1, 1).float()) * freqs[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class TimeEmbed(nn.Module):
    def __init__(self, sin_dim=64, dim=128):
        super().__init__()
        self.sin_dim = sin_dim
        self.lin1 = nn.Linear(sin_dim, dim)
        self.lin2 = nn.Linear(dim, dim)

    def forward(self, t):
        return self.lin2(F.silu(self.lin1(sinusoidal_embedding(t, self.sin_dim))))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb_dim=128, groups=8):
        super().__init__()
        self.gn1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, cout)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, h, temb):
        a = self.conv1(F.silu(self.gn1(h)))
        a = a + self.temb_proj(temb)[:, :, None, None]
        a = self.conv2(F.silu(self.gn2(a)))
        return a + (self.skip(h) if self.skip is not None else h)


class Level(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.res = nn.ModuleList(blocks)


class UNet(nn.Module):
    def __init__(self, channels=1, base=32, mult=(1, 2, 2), nres=2, groups=8,
                 sin_dim=64, temb_dim=128):
        super().__init__()
        self.nlevels = len(mult)
        self.temb = TimeEmbed(sin_dim, temb_dim)
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
        chs = [base * m for m in mult]
        self.down = nn.ModuleList()
        c = base
        for lc in chs:
            blocks = []
            for _ in range(nres):
                blocks.append(ResBlock(c, lc, temb_dim, groups))
                c = lc
            self.down.append(Level(blocks))
        self.mid = nn.ModuleList([ResBlock(c, c, temb_dim, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for lc in reversed(chs):          # skip of this level has lc channels
            blocks = [ResBlock(c + lc, lc, temb_dim, groups)]
            c = lc
            for _ in range(nres - 1):
                blocks.append(ResBlock(c, c, temb_dim, groups))
            self.up.append(Level(blocks))
        self.out_norm = nn.GroupNorm(groups, c)
        self.out_conv = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, x, t):
        temb = self.temb(t)
        h = self.conv_in(x)
        skips = []
        for i, lvl in enumerate(self.down):
            for rb in lvl.res:
                h = rb(h, temb)
            skips.append(h)
            if i != self.nlevels - 1:
                h = F.avg_pool2d(h, 2)
        for rb in self.mid:
            h = rb(h, temb)
        for j, lvl in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for rb in lvl.res:
                h = rb(h, temb)
            if j != self.nlevels - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out_conv(F.silu(self.out_norm(h)))


# ----------------------------------------------------------------------------- fmnist-dit-s

def rope_2d(x, row, col, theta=100.0):
    """2-D axial RoPE (src/tf/posenc.c dfl_rope_2d, interleaved layout, whole head): x (..., T, Dh);
    pair i = lanes (2i, 2i+1); pairs i < Dh/4 rotate by row*theta_i, the others by
    col*theta_(i - Dh/4), theta_j = theta^(-2j/(Dh/2))."""
    dh = x.shape[-1]
    half, q = dh // 2, dh // 4
    j = torch.arange(q, dtype=torch.float64, device=x.device)
    th = theta ** (-2.0 * j / half)
    ang = torch.cat([row.double()[:, None] * th[None, :], col.double()[:, None] * th[None, :]], 1)
    c, s = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)      # (T, Dh/2)
    xa, xb = x[..., 0::2], x[..., 1::2]
    return torch.stack([xa * c - xb * s, xa * s + xb * c], -1).flatten(-2)


def sincos_2d(gh, gw, dim):
    """DiT / MAE get_2d_sincos_pos_embed: features [0, D/2) from the column, [D/2, D) from the row,
    each D/4 sines then D/4 cosines of pos * 10000^(-k/(D/4))."""
    q = dim // 4
    w = 10000.0 ** (-torch.arange(q, dtype=torch.float64) / q)
    t = torch.arange(gh * gw)
    parts = []
    for pos in (t % gw, t // gw):
        a = pos.double()[:, None] * w[None, :]
        parts += [torch.sin(a), torch.cos(a)]
    return torch.cat(parts, 1).float()


class DiTAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, row, col, rope_theta):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope_theta is not None:
            q, k = rope_2d(q, row, col, rope_theta), rope_2d(k, row, col, rope_theta)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(n, t, d))


class DiTMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = DiTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = DiTMlp(dim, mlp_ratio * dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, row, col, rope_theta):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1[:, None, :] * self.attn(modulate(self.norm1(x), sh1, sc1), row, col, rope_theta)
        return x + g2[:, None, :] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class DiTFinalLayer(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTTimeEmbed(nn.Module):
    def __init__(self, freq_dim, dim):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(sinusoidal_embedding(t, self.freq_dim))


class DiTPatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)      # (N, T, D), row-major grid


class DiT(nn.Module):
    """fmnist-dit-s (src/nn/dit.c; Peebles & Xie 2023 without the label embedder): patch 4 on
    28x28x1 (49 tokens), D 192, 6 adaLN-Zero blocks of 4 heads, MLP ratio 4, 256-dim time
    frequencies of 1000 t, 2-D RoPE base 100 on q and k (posenc "rope2d"), or DiT's fixed sin-cos
    table added to the tokens ("sincos"), or nothing ("none")."""

    def __init__(self, channels=1, size=28, patch=4, dim=192, depth=6, heads=4, mlp_ratio=4,
                 freq_dim=256, posenc="rope2d", rope_theta=100.0):
        super().__init__()
        self.channels, self.size, self.patch = channels, size, patch
        self.posenc, self.rope_theta = posenc, rope_theta
        g = size // patch
        self.x_embedder = DiTPatchEmbed(channels, dim, patch)
        self.t_embedder = DiTTimeEmbed(freq_dim, dim)
        self.blocks = nn.ModuleList([DiTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = DiTFinalLayer(dim, channels * patch * patch)
        t = torch.arange(g * g)
        self.register_buffer("row", t // g, persistent=False)
        self.register_buffer("col", t % g, persistent=False)
        self.register_buffer("pos_table", sincos_2d(g, g, dim), persistent=False)
        self.initialize_weights()

    def initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for i in (0, 2):
            nn.init.normal_(self.t_embedder.mlp[i].weight, std=0.02)
        for b in self.blocks:
            nn.init.zeros_(b.adaLN_modulation[-1].weight)
            nn.init.zeros_(b.adaLN_modulation[-1].bias)
        for m in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x, t):
        n, p, g = x.shape[0], self.patch, self.size // self.patch
        h = self.x_embedder(x)
        if self.posenc == "sincos":
            h = h + self.pos_table
        c = self.t_embedder(t)                                # adaLN_modulation applies the SiLU
        theta = self.rope_theta if self.posenc == "rope2d" else None
        for b in self.blocks:
            h = b(h, c, self.row, self.col, theta)
        h = self.final_layer(h, c)                            # (N, T, C p p), feature (c, i, j)
        h = h.reshape(n, g, g, self.channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return h.reshape(n, self.channels, g * p, g * p)


# ----------------------------------------------------------------------------- presets

PRESETS = {
    # data shape (without batch), train batch, Adam lr
    "toy-mlp": dict(shape=(2,), batch=512, lr=1e-3),
    "fmnist-unet-s": dict(shape=(1, 28, 28), batch=64, lr=2e-4),
    "fmnist-dit-s": dict(shape=(1, 28, 28), batch=64, lr=2e-4),
}


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def build(preset):
    if preset == "toy-mlp":
        m = ToyMLP()
        n = count_params(m)
        assert n == MLP_PARAMS, n
    elif preset == "fmnist-unet-s":
        m = UNet()
        n = count_params(m)
        assert n == UNET_PARAMS, f"fmnist-unet-s has {n} parameters, expected {UNET_PARAMS}"
    elif preset == "fmnist-dit-s":
        m = DiT()
        n = count_params(m)
        assert n == DIT_PARAMS, f"fmnist-dit-s has {n} parameters, expected {DIT_PARAMS}"
    else:
        raise ValueError(f"unknown preset {preset!r}")
    return m


def fm_loss(net, x0, eps=None, t=None):
    """Flow matching: x_t = (1-t) x0 + t eps, u = eps - x0, mean((net(x_t,t) - u)^2)."""
    if eps is None:
        eps = torch.randn_like(x0)
    if t is None:
        t = torch.rand(x0.shape[0], dtype=x0.dtype, device=x0.device)
    tb = t.reshape(-1, *([1] * (x0.dim() - 1)))
    xt = (1 - tb) * x0 + tb * eps
    return torch.mean((net(xt, t) - (eps - x0)) ** 2)


def two_moons(n, noise=0.1, generator=None):
    """sklearn-style two moons (torch only, no numpy)."""
    n1 = n // 2
    n2 = n - n1
    a1 = torch.rand(n1, generator=generator) * math.pi
    a2 = torch.rand(n2, generator=generator) * math.pi
    m1 = torch.stack([torch.cos(a1), torch.sin(a1)], 1)
    m2 = torch.stack([1 - torch.cos(a2), 0.5 - torch.sin(a2)], 1)
    x = torch.cat([m1, m2], 0)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x[torch.randperm(n, generator=generator)]


def dump_keys(model, path):
    with open(path, "w") as f:
        for k, v in model.state_dict().items():
            f.write(f"{k} {'x'.join(str(s) for s in v.shape)}\n")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    torch.manual_seed(0)
    unet = build("fmnist-unet-s")
    mlp = build("toy-mlp")
    print("fmnist-unet-s params:", count_params(unet))
    for name, mod in [("temb", unet.temb), ("conv_in", unet.conv_in)] + \
            [(f"down.{i}", m) for i, m in enumerate(unet.down)] + [("mid", unet.mid)] + \
            [(f"up.{i}", m) for i, m in enumerate(unet.up)] + \
            [("out_norm", unet.out_norm), ("out_conv", unet.out_conv)]:
        print(f"  {name:10s} {count_params(mod):>9,d}")
    print("toy-mlp params:", count_params(mlp))
    y = unet(torch.randn(2, 1, 28, 28), torch.rand(2))
    assert y.shape == (2, 1, 28, 28)
    dump_keys(unet, os.path.join(here, "unet_keys.txt"))
    dump_keys(mlp, os.path.join(here, "mlp_keys.txt"))
    dit = build("fmnist-dit-s")
    print("fmnist-dit-s params:", count_params(dit))
    y = dit(torch.randn(2, 1, 28, 28), torch.rand(2))
    assert y.shape == (2, 1, 28, 28) and torch.all(y == 0)   # adaLN-Zero start
    dump_keys(dit, os.path.join(here, "dit_keys.txt"))
    print("wrote unet_keys.txt, mlp_keys.txt, dit_keys.txt")
