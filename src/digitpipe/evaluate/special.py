"""Special functions for exact binomial and chi-square tails (standard library only).

The regularized incomplete beta and gamma functions (continued fractions, modified Lentz, as in
Numerical Recipes), the beta quantile by bisection, and the distributions built on them.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_FPMIN = 1e-300
_MAX_ITER = 100_000


def _lentz_beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz, Numerical Recipes)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
            c = 1.0 + aa / c
            c = c if abs(c) > _FPMIN else _FPMIN
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b})")


def _stirling_error(z: float) -> float:
    """lgamma(z) minus its Stirling approximation (z - 1/2) log z - z + log(2 pi) / 2."""
    if z <= 15.0:
        return math.lgamma(z) - (z - 0.5) * math.log(z) + z - 0.5 * math.log(2.0 * math.pi)
    inv2 = 1.0 / (z * z)
    series = 1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 * (1 / 1680 - inv2 / 1188)))
    return series / z


def _deviance(k: float, m: float) -> float:
    """k log(k / m) + m - k without cancellation when k is close to m (Loader's bd0)."""
    if abs(k - m) < 0.1 * (k + m):
        v = (k - m) / (k + m)
        total = (k - m) * v
        term = 2.0 * k * v
        v *= v
        j = 1
        while True:
            term *= v
            updated = total + term / (2 * j + 1)
            if updated == total:
                return total
            total = updated
            j += 1
    return k * math.log(k / m) + m - k


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    # x^a (1-x)^b / B(a, b), written with Stirling errors and deviances (as in Loader's
    # binomial density) so that large a, b lose no precision to cancelling logarithms.
    total = a + b
    log_front = (
        0.5 * math.log(a * b / (2.0 * math.pi * total))
        + _stirling_error(total)
        - _stirling_error(a)
        - _stirling_error(b)
        - _deviance(a, total * x)
        - _deviance(b, total * (1.0 - x))
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _lentz_beta_cf(a, b, x) / a
    return 1.0 - front * _lentz_beta_cf(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x in [0, 1] with I_x(a, b) = q, by bisection to machine precision."""
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi) or hi - lo < 1e-16:
            return mid
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid


def binom_sf_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), via P(X >= k) = I_p(k, n - k + 1)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return betainc(float(k), float(n - k + 1), p)


def clopper_pearson(x: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for x successes in n trials."""
    alpha = 1.0 - confidence
    lower = 0.0 if x == 0 else beta_quantile(alpha / 2.0, float(x), float(n - x + 1))
    upper = 1.0 if x == n else beta_quantile(1.0 - alpha / 2.0, float(x + 1), float(n - x))
    return lower, upper


def gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma function Q(a, x) for a > 0, x >= 0."""
    if x <= 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # series for P(a, x)
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                return 1.0 - total * math.exp(log_front)
        raise ArithmeticError(f"incomplete gamma series did not converge (a={a}, x={x})")
    b = x + 1.0 - a  # continued fraction for Q(a, x), modified Lentz
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER + 1):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = b + an / c
        c = c if abs(c) > _FPMIN else _FPMIN
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma continued fraction did not converge (a={a}, x={x})")


def chi2_sf(statistic: float, df: int) -> float:
    """Survival function of the chi-square distribution with df degrees of freedom."""
    return gammaincc(df / 2.0, statistic / 2.0)
