"""Ed25519 signature verification (RFC 8032) in pure Python: no OpenSSL, no ctypes.

Why not the ``cryptography`` package: on a device it would add ~4.6 MB (compressed) to
an executable already at its size limit, to do one verification per start. Why not
OpenSSL's libcrypto, which CPython's ``hashlib`` links (this module called it through
ctypes until issue 14): loading it cost a frozen ``serve`` ~3.6 MB of private memory for
as long as it ran (idle USS of a signed bundle 66.5 MB vs 62.9 MB unsigned; now 63.0 vs
62.9, ``benchmarks/serve_uss.sh``), and a one-row ``predict`` more instructions than this
code does (callgrind, main thread, ``--no-monitor``: unsigned 562.0 M, signed 581.2 M
with OpenSSL, 576.4 M here). One verification costs ~13 M instructions, ~1.4 ms (8x
``cryptography``'s, which has OpenSSL loaded already; ``benchmarks/signing.py``), plus
~0.8 M to import this module. The hash is CPython's builtin SHA-512
(:func:`mlpack_edge._digest.sha512`), so nothing here loads OpenSSL or ctypes.

Verification only handles public data (key, signature, message), so it need not run in
constant time and is written for speed: extended twisted Edwards coordinates, one
interleaved (Straus) double-scalar multiplication ``[S]B - [k]A`` with width-w NAF
digits (the odd multiples of B are precomputed below; A's are built per call), and a
single field inversion to encode the result. Acceptance is OpenSSL's cofactorless rule:
``S < L``, ``A`` decodes, and the encoding of ``[S]B - [k]A`` equals the signature's
``R`` byte for byte, ``k = SHA-512(R || A || M) mod L`` -- so an ``R`` that is not a
canonical encoding of a curve point never verifies. ``A`` is decoded strictly (RFC 8032
5.1.3: ``y < p``, no negative zero), where OpenSSL also accepts the 19 non-canonical
``y`` encodings; keys made from a private key are always canonical. The tests check the
RFC 8032 vectors and cross-check verdicts against ``cryptography`` (OpenSSL).
"""

from __future__ import annotations

from mlpack_edge._digest import sha512

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "verify"]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

_P = 2**255 - 19  # the field
_L = 2**252 + 27742317777372353535851937790883648493  # the group order
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555  # -121665/121666
_D2 = 2 * _D % _P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # 2^((p-1)/4)
_Y_MASK = (1 << 255) - 1
_W_A = 5  # NAF width for the per-call scalar k (table of 8 odd multiples of A)
_W_B = 7  # NAF width for S (table of 32 odd multiples of B, below)

#: Odd multiples B, 3B, 5B, ... of the base point, each as (y - x, y + x, 2d*x*y) mod p:
#: the affine "cached" form that an addition consumes directly (checked by the tests'
#: ``test_the_base_point_table_is_the_odd_multiples_of_b``, which recomputes it).
_B_ODD: tuple[tuple[int, int, int], ...] = (
    (
        0x44fd2f9298f81267a5c18434688f8a09fd399f05d140beb39d103905d740913e,
        0x07cf9d3a33d4ba65270b4898643d42c2cf932dc6fb8c0e192fbc93c6f58c3b85,
        0x6f117b689f0c65a85a1b7dcbdd43598c26d9e823ccaac49eabc91205877aaa68,
    ),
    (
        0x2ab91587555bda628131f31a214bd6bd3bd353fde5c1ba7d56611fe8a4fcd265,
        0x7a164e1b9a80f8f4c11b50029f016732025a8430e8864b8aaf25b0a84cee9730,
        0x5a2826af12b9b4c6d170e5458cf2db4c589423221c35da6214ae933f0dd0d889,
    ),
    (
        0x154a7e73eb1b55f3e33cf11cb864a087d50014d14b2729b77f9182c3a447d6ba,
        0x2945ccf146e206ebdd1beb0c5abfec448d5048c3c75eed02a212bc4408a5bb33,
        0x43aabe696b3bb69ab41b670b1bbda72d270e0807d0bdd1fcbcbbdbf1812a8285,
    ),
    (
        0x1d6edd5d2e5317e09dea764f92192c3a6ca021533bba23a7ba6f2c9aaa3221b1,
        0x461bea69283c927e71b2528228542e497470353ab39dc0d26b1a5cd0944ea3bf,
        0x7a9fbb1c6a0f90a7529c41ba5877adf3b3035f47053ea49af1836dc801b8b3a2,
    ),
    (
        0x49c05a51fadc9c8f96cbc608e75eb04498a081b6f520419bf36e217e039d8064,
        0x34b9ed338add7f59ceb233c9c686f5b5a6509e6f51bc46c59b2e678aa6a8632f,
        0x73c172021b008b06aaf6fc2993d4cf16e2ff83e8a719d22f06b4e8bf9045af1b,
    ),
    (
        0x18ab598029d5c77fa3a075556a8deb953ed6b36977088381315f5b0249864348,
        0x4275aae2546d8faf113e847117703406e5d9fecf02302e272fbf00848a802ade,
        0x3dc65522b53df94844311199b51a8622031eb4a13282e4a4d82b2cc5fd6089e9,
    ),
    (
        0x0267882d176024a79d12b232aaad5968aefcebc99b776f6b506f013b327fbf93,
        0x234fd7eec346f241537a0e12fb07ba07bf84b39ab5bcdedbbf70c222a2007f6d,
        0x497ba6fdaa097863a2ef37f891a7e5332437e6b1df8dd4715360a119732ea378,
    ),
    (
        0x43b5cd4218d05ebf7508300807b25192d3829ba42a9910d6040bcd86468ccf0b,
        0x61e22917f12de72b2dbdbdfac1f2d4d08648c28d189c246d24cecc0313cfeaa0,
        0x511d61210ae4d842032e5a7d93d64270eb38af4e373fdeee5d9a762f9bd0b516,
    ),
    (
        0x71a7fe6fe248281039fa4e2729942d258a1cf016b592edb4081386484420de87,
        0x6d325924ddb855e3aa9b36646f8f1248a54620cdc0d7044f92c676ef950e9d81,
        0x4746c4b6559eeaa972cf591883778d0c33fd1479fe5f2a036c7182b8a5c8c854,
    ),
    (
        0x219663497db5e6d6ff939a760672a3327d35aedd0efcc849348546c864741147,
        0x5c9a51de34fe9fb745651cf7b53a16b5defab2276f89f617d3777b3c6dc69a2b,
        0x4804503c608223bb09c3a71710142277ffdddaa1e658515bf510f1cf79f10e67,
    ),
    (
        0x771e098858de4c5e5d9e5ce420838a47bbb40aa7e99b9e323b6821d23a36d175,
        0x553398a51650696d88a96ed7c96e0e23a059a0e3a615acabc4249ed02ca37fc7,
        0x5a5ed1d68ff5a611477f4a2d9fa595083ada5d7985899ccb9a12f5d278451edf,
    ),
    (
        0x019b60135fefdc4428653c1eda1cabe9392e5c19cadb9d7ebae5e0c558527359,
        0x44acb897d8bf92f07387f8291e711e20cf209a257e4b35d81195122afe150e83,
        0x150c49fde6ad2f92506e88a8fc1a3ed7c4f5e64f24304c161e6068145e134b83,
    ),
    (
        0x78a6d7791e05fbc1fe3ee3560c36168dc83f44dbb8714ad0b849863c9cdca868,
        0x6b2b5a075bb9992210af79c425a708ad5d6fef394f75a6518e7bf29509471138,
        0x725c7ffc4ad55d00aa2b1fb1d542f590a601b355741748d558bf704b47a0b976,
    ),
    (
        0x4cd54625f855fae7df585d714902994cfe416ca4ed5e636691802bf71cd098c0,
        0x794cc9277cb1f3a323d1157b8b12109f7352d51102a20d34e4426715d1cf99b2,
        0x7008357b6fcc8e852ad032f10a311021bc9aedad32f672584af6c426c2ac5053,
    ),
    (
        0x13a92a3669d6d428b631639c4853620247ab6463d2b4792bd01b9fbb82584a34,
        0x06ef7e9851ad0f6a8d2dd5a3b9ad29b6b8ccc8fa95fbccfb0b88672738773f01,
        0x3c296ddf8a2af86a24680f01d802e0717540e41e5035dc5cca93771cc0577de5,
    ),
    (
        0x0a892c700747717bfc71a37dd0a1ad05b89510c740adb91ffceb4d2ebb1f2541,
        0x7a99d393490c77baaff823179f53d730a92f7bf98c8ff912aead15f9d914a713,
        0x286762d28302f7d2a5a96563262f9ce077a8c84157e807948f52ed2436bda3e8,
    ),
    (
        0x7686f2a3d6f1767a154a179f3bbb89b8e4986cb46747bc637c558e2bce2ef5bd,
        0x32f1da046a9d9d3a0cc192d3cbc7b83f82e1181db26baa974e7836093ce35b25,
        0x561305f8a9ad28a63f91dc73c209b0228f11930304d3852baa8d12a66d597c6a,
    ),
    (
        0x030a1aef2c57cc6ccaf68da7d7010a61709de9bbdb075c536722cc28e7b0c0d5,
        0x00aaec53e35d4d2c83131b22d847ba48ca43d5434d6d73e5100c978dec92aed1,
        0x20be9c1c240654807821dc86520ed23e0b3f29802b2166087bb1f773003ad2aa,
    ),
    (
        0x69764c545067e311105d639cf95a0d1cb03b3b2fcbdcb93820e0e44ae2025e60,
        0x750ab3361f0ac1de1c7f9a81c36f63b55943bc2df546e493e15387d8249673a6,
        0x54f96b3fb7075040b72fd15bac2e25636f2eda23bd7fcbf11e8a3283a2f81037,
    ),
    (
        0x78e6839fbe85dbf0b7a8a110e6ece78589764b9cfa576479177dafc616b11ecd,
        0x3d7fe9c52bb7539e6f3d94828c5760f13adda2047d7d724a0fadf20429669279,
        0x70f268f350088242320ff74aa0e59e2275d05d43041a178a70332df737b8856b,
    ),
    (
        0x404e56c039b8c4b9b31ddeed3552b698380cc97ee7fce1172324112070dcf355,
        0x7c0d345cfad889d9e9874eb71e4cb006f535c5d160dd7c1966864583b1805f47,
        0x20d754762aaec7775cbc4152b45f3d44a0366ab167e0b5e1591f1f4b8c78338a,
    ),
    (
        0x38b8ada8790b4ce1e9322b0757138ba984b37df1de8c956c9d74feb135b9f543,
        0x2b8f1e46f3ceec62a9934a7d903bc922ace543a5363cbb9a5e8fc36fc73bb758,
        0x049aeb32ceba19531d106d8b328b66da2b3952aecb1fdeacb5c04a9cdf51f95d,
    ),
    (
        0x51c665e0c8d625fcb6676861e14f7c13209c594897856e40d7767d3c63dcfe7e,
        0x795ee17530f674fc1d82542b396b39300fef924b7a6725d3aa507d0b75fc7931,
        0x6cd19bf49dc54477e6a24d0dcaee4a315d411f6ee034afe7254a5b0a52ecbd81,
    ),
    (
        0x7520f3db40b2e63880a2baa88499711e571d0a060b2c9f857e87619052179ca3,
        0x5e01b3a7429e43e776f6627e20990baa082a2a88b8d51b101ffe612165afc386,
        0x71092c9ccef3c9861a309a64df311e6e967b6cdd599e94a53db50be3d39357a1,
    ),
    (
        0x0ea15b03d0257ba7080b4a9e6681e5a4a2b404f43fab6b1c53d8523f0364918c,
        0x4173a5bb7137abde3a4ae7cbc9743ceb03f6a40855b7aa1e856bd8ac74051dcf,
        0x5fc565614a4e3a67f7931668f4b2f1765a696e2b1afc470817c56e31f0f9218a,
    ),
    (
        0x62711c414c454aa159549f03310dad860fd0aacc54f8dc8f136e570dc46d7ae5,
        0x3214c7409d46651be3b0819ae5923eed01d5950f1c5cd7224892e1e67790988e,
        0x5bea94073ecb833cd9b6b8ec185d223c3ba4a0668a2794361329827406651770,
    ),
    (
        0x3aacd5c148f61eecabfe9e02f697b065acf38b317d6e579c641dbf0912c89be4,
        0x4ad0785944f1bd2f35da51a1a2117b6f0067ba8f0543e8f1b470ce63f343d2f8,
        0x3aff0cb1d902853d34085b2ed39da88cdc99c04707316826858e3b34c3318301,
    ),
    (
        0x110e7e86f4cd251d29252e48ad29d5f98ee311efedad56c987c5c7eb3a20405e,
        0x2ccf9f732bd99e7f09ef33788fd327c668e49c13261f22839226430bf4c53505,
        0x05c557e0b9693a3753172709a02e3bb712888628f0b0200c57c0d89ed603f5e4,
    ),
    (
        0x6e154c178fe9875ae15b7ea08bed25dd7a3f263011f9fdaed8f9ce311fc97e6f,
        0x289fef0841861205b6b93f4e634421fb61f85bf6fa0fd85cf776bbb089c20eb0,
        0x6afbf642a95ca31913789765753a7fe79b16e4e78335c94fcf616336fed69abf,
    ),
    (
        0x0db4b851b95038c47deb6ada0dad70e098fc3da4b00e7b9a7da8de0c62f5d2c1,
        0x12c093cedb801ed9da2956b690ead4897d1d167b2b0cf5615de55070f913a8cc,
        0x33aa8799c6635ce6cee75572dac7d7fd06969da0a11ae310fc147f9308b8190f,
    ),
    (
        0x233c6f29e8e21a866ec2bfe15060033c78f51a8967d33f1faf0ff51ebd085cf2,
        0x212cd0c1c8d589a6e2262d5c87ca5ab66da2ba9b1a0a6d278348f588fc156cb1,
        0x1db7778911914ce3a70a862a3d3d3341122ecdf2527e9d28d2f4d5107f18c781,
    ),
    (
        0x31ad97ad26e2adfc7c74f43abf79a3307a97e2cc53d50113ddf352397c6bc26f,
        0x7ae2ca8a017d24be15df4161fd2ac852e2b8ded419cf8da5b3394769dd701ab6,
        0x1ed1fc53a6622c83e491c14f25560a641e8518cc3f19da9db7e817ed0920b962,
    ),
)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    point = _decode(public_key)
    if point is None:
        return False
    r = signature[:32]
    k = int.from_bytes(sha512(r + public_key + message), "little") % _L
    x, y = point
    return _encode(_double_scalar(s, k, (_P - x) % _P, y)) == r  # [S]B + [k](-A)


def _decode(data: bytes) -> tuple[int, int] | None:
    """The affine point ``data`` encodes (RFC 8032 5.1.3, strict), None if it is none."""
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= _Y_MASK
    if y >= _P:
        return None
    p = _P
    yy = y * y % p
    u = yy - 1
    v = _D * yy + 1
    v3 = v * v % p * v % p
    x = u * v3 * pow(u * v3 * v3 * v, (p - 5) // 8, p) % p
    vxx = v * x * x % p
    if vxx != u % p:
        if vxx != -u % p:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def _encode(point: tuple[int, int, int]) -> bytes:
    """The 32-byte encoding of a projective point (X, Y, Z): one inversion."""
    x, y, z = point
    p = _P
    if z % p == 0:  # cannot happen with complete formulas; refuse rather than divide by 0
        return b""
    zi = pow(z, -1, p)
    x = x * zi % p
    y = y * zi % p
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _naf(k: int, width: int) -> list[int]:
    """Width-``width`` NAF digits of ``k >= 0``, least significant first (len 256)."""
    digits = [0] * 256
    full = 1 << width
    half = full >> 1
    mask = full - 1
    i = 0
    while k:
        zeros = (k & -k).bit_length() - 1
        k >>= zeros
        i += zeros
        d = k & mask
        if d >= half:
            d -= full
        digits[i] = d
        k = (k - d) >> width
        i += width
    return digits


def _double_scalar(s: int, k: int, ax: int, ay: int) -> tuple[int, int, int]:
    """[s]B + [k]A' for A' = (ax, ay), interleaved, in extended coordinates (X, Y, Z).

    Products that only feed further products are folded rather than reduced (2^255 = 19
    mod p: ``(v & mask) + 19 * (v >> 255)`` < 2^262, ~2.4x cheaper than ``%`` in CPython:
    13.0 M instead of 15.0 M instructions per verify); each point's coordinates are
    reduced with ``%``, so nothing grows from one step to the next.
    """
    p = _P
    d2 = _D2
    # Odd multiples A', 3A', ..., 15A' in cached form (Y - X, Y + X, 2d*T, 2Z).
    at = ax * ay % p
    a_odd: list[tuple[int, int, int, int]] = []
    # 2A' (doubling of an affine point, Z = 1).
    xa = ax * ax % p
    yb = ay * ay % p
    h = xa + yb
    e = h - (ax + ay) * (ax + ay) % p
    g = xa - yb
    f = 2 + g
    x2, y2, z2, t2 = e * f % p, g * h % p, f * g % p, e * h % p
    cache2 = ((y2 - x2) % p, (y2 + x2) % p, d2 * t2 % p, 2 * z2 % p)
    x1, y1, z1, t1 = ax, ay, 1, at
    count = 1 << (_W_A - 2)
    while True:
        a_odd.append(((y1 - x1) % p, (y1 + x1) % p, d2 * t1 % p, 2 * z1 % p))
        if len(a_odd) == count:
            break
        q0, q1, q2, q3 = cache2
        a = (y1 - x1) * q0 % p
        b = (y1 + x1) * q1 % p
        c = t1 * q2 % p
        dd = z1 * q3 % p
        e = b - a
        f = dd - c
        g = dd + c
        h = b + a
        x1, y1, z1, t1 = e * f % p, g * h % p, f * g % p, e * h % p
    na = _naf(k, _W_A)
    nb = _naf(s, _W_B)
    top = 255
    while top >= 0 and not na[top] and not nb[top]:
        top -= 1
    bt = _B_ODD
    m = _Y_MASK
    x, y, z, t = 0, 1, 1, 0
    for i in range(top, -1, -1):
        # double: 4 squarings (folded) + 3 products, T only when an addition follows
        xx = x * x
        xx = (xx & m) + 19 * (xx >> 255)
        yy = y * y
        yy = (yy & m) + 19 * (yy >> 255)
        h = xx + yy
        e = (x + y) * (x + y)
        e = h - (e & m) - 19 * (e >> 255)
        g = xx - yy
        f = z * z
        f = 2 * ((f & m) + 19 * (f >> 255)) + g
        x = e * f % p
        y = g * h % p
        z = f * g % p
        da = na[i]
        db = nb[i]
        if da or db:
            t = e * h % p
            if da:
                if da > 0:
                    q0, q1, q2, q3 = a_odd[da >> 1]
                else:
                    q1, q0, q2, q3 = a_odd[-da >> 1]
                    q2 = -q2
                a = (y - x) * q0
                a = (a & m) + 19 * (a >> 255)
                b = (y + x) * q1
                b = (b & m) + 19 * (b >> 255)
                c = t * q2
                c = (c & m) + 19 * (c >> 255)
                dd = z * q3
                dd = (dd & m) + 19 * (dd >> 255)
                e = b - a
                f = dd - c
                g = dd + c
                h = b + a
                x = e * f % p
                y = g * h % p
                z = f * g % p
                if db:
                    t = e * h % p
            if db:
                if db > 0:
                    q0, q1, q2 = bt[db >> 1]
                else:
                    q1, q0, q2 = bt[-db >> 1]
                    q2 = -q2
                a = (y - x) * q0
                a = (a & m) + 19 * (a >> 255)
                b = (y + x) * q1
                b = (b & m) + 19 * (b >> 255)
                c = t * q2
                c = (c & m) + 19 * (c >> 255)
                dd = 2 * z
                e = b - a
                f = dd - c
                g = dd + c
                h = b + a
                x = e * f % p
                y = g * h % p
                z = f * g % p
    return x, y, z
