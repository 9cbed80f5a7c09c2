r"""A vectorised NumPy implementation of one Euler step, written independently of the JAX code.

It indexes neighbours through integer index arrays (no ``roll``), builds the full link angles
(background included) explicitly, and treats open boundaries by dropping bonds from neighbour
lists. The drag (mixed-gradient) coupling enters as the kinetic matrix
:math:`M = ((K_1, \nu_d/2), (\nu_d/2, K_2))`: component a relaxes with :math:`\sum_b M_{ab}\Delta_U\psi_b`
and the link current is :math:`\sum_{ab} 2M_{ab}\mathrm{Im}(\psi_a^* U \psi_b)`.
``tests/test_solver.py::test_numpy_reference_step_agrees`` checks that it agrees with
``_solver.euler_step`` to float tolerance; ``benchmarks/solver_throughput.py`` uses it as the baseline.
"""

from __future__ import annotations

import numpy as np

from ._config import TDGLConfig, TDGLParams


class NumpyTDGL:
    """Precomputed index arrays for a config; ``step`` advances numpy arrays by one Euler step."""

    def __init__(self, cfg: TDGLConfig) -> None:
        self.cfg = cfg
        nx, ny = cfg.shape
        i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        bx, by = cfg.axes_boundary
        self.ip, self.im = (i + 1) % nx, (i - 1) % nx
        self.jp, self.jm = (j + 1) % ny, (j - 1) % ny
        self.i, self.j = i, j
        # a bond exists unless it leaves an open sample
        self.has_x = np.ones((nx, ny), bool) if bx == "periodic" else (i < nx - 1)
        self.has_y = np.ones((nx, ny), bool) if by == "periodic" else (j < ny - 1)
        self.has_p = self.has_x & self.has_y
        self.torus = cfg.torus

    def link_angles(self, a_x: np.ndarray, a_y: np.ndarray, field: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Full link angles and the reference plaquette flux."""
        cfg = self.cfg
        nx, ny = cfg.shape
        if not self.torus:
            return a_x, a_y, field * cfg.h**2
        n_phi = round(field * nx * ny * cfg.h**2 / (2 * np.pi))
        phi = 2 * np.pi * n_phi / (nx * ny)
        bg_x = np.where(self.i == nx - 1, -phi * nx * self.j, 0.0)
        bg_y = phi * self.i
        return a_x + bg_x, a_y + bg_y, phi

    def step(
        self, psi: np.ndarray, a_x: np.ndarray, a_y: np.ndarray, p: TDGLParams, noise: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One explicit Euler step (same equations as ``_solver.euler_step``)."""
        cfg = self.cfg
        h2, dt, C = cfg.h**2, cfg.dt, cfg.components
        K = np.asarray(p.K, np.float64)
        alpha, beta, gamma = (np.asarray(v, np.float64) for v in (p.alpha, p.beta, p.gamma))
        eta, nu, e, sigma, T = (float(v) for v in (p.eta, p.nu, p.e, p.sigma, p.T))
        M = np.diag(K)  # kinetic matrix
        if C == 2 and p.drag is not None:
            M[0, 1] = M[1, 0] = 0.5 * float(p.drag)
        ax, ay, th_ref = self.link_angles(a_x, a_y, float(p.field))
        ux = np.exp(-1j * ax) * self.has_x
        uy = np.exp(-1j * ay) * self.has_y
        n_nb = self.has_x.astype(float) + self.has_x[self.im, self.j] + self.has_y + self.has_y[self.i, self.jm]
        new_psi = np.empty_like(psi)
        jx = np.zeros(a_x.shape)
        jy = np.zeros(a_y.shape)
        rho = np.abs(psi) ** 2
        fwd_x = ux * psi[:, self.ip, self.j]  # U^x_ij psi_{a,i+1,j}, per component
        fwd_y = uy * psi[:, self.i, self.jp]
        back_x = np.conj(ux[self.im, self.j]) * psi[:, self.im, self.j]
        back_y = np.conj(uy[self.i, self.jm]) * psi[:, self.i, self.jm]
        lap = (fwd_x + fwd_y + back_x + back_y - n_nb * psi) / h2
        for a in range(C):
            s = psi[a]
            rhs = -alpha[a] * s - beta[a] * rho[a] * s
            for b in range(C):
                if M[a, b] != 0:
                    rhs = rhs + M[a, b] * lap[b]
                jx += 2 * M[a, b] * np.imag(np.conj(s) * fwd_x[b])
                jy += 2 * M[a, b] * np.imag(np.conj(s) * fwd_y[b])
            if C == 2:
                b = 1 - a
                rhs = rhs + eta * psi[b] - nu * rho[b] * s
            new_psi[a] = s + dt / gamma[a] * rhs
        new_ax, new_ay = a_x, a_y
        if cfg.gauge == "dynamic":
            th = a_x + a_y[self.ip, self.j] - a_x[self.i, self.jp] - a_y
            dev = np.where(self.has_p, th - (0.0 if self.torus else th_ref), 0.0) / (e**2 * h2)
            fx = (jx - (dev - dev[self.i, self.jm])) * self.has_x
            fy = (jy + (dev - dev[self.im, self.j])) * self.has_y
            new_ax = a_x + dt / sigma * fx
            new_ay = a_y + dt / sigma * fy
        if noise is not None:
            amp = np.sqrt(T * dt / (gamma * h2))[:, None, None]
            new_psi = new_psi + amp * (noise[:C] + 1j * noise[C : 2 * C])
            if cfg.gauge == "dynamic":
                amp_a = np.sqrt(2 * T * dt / sigma)
                new_ax = new_ax + amp_a * noise[2 * C] * self.has_x
                new_ay = new_ay + amp_a * noise[2 * C + 1] * self.has_y
        return new_psi, new_ax, new_ay
