// pow-worker.js: solves the proof of work of docs/API.md in a Web Worker:
// the smallest decimal answer such that SHA-256(seed + ":" + answer) has at
// least `difficulty` leading zero bits. A small SHA-256 in plain JavaScript:
// far faster per hash than crypto.subtle.digest, whose every call is an
// asynchronous round trip.
//
// In:  {seed, difficulty}
// Out: {tried} every ~100 ms, then {answer, tried}.
'use strict';

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Uint32Array(64);
const H = new Uint32Array(8);

// sha256 hashes bytes[0:len] into H. buf must have room for the padding.
function sha256(buf, len) {
  const blocks = ((len + 8) >>> 6) + 1;
  const total = blocks * 64;
  buf[len] = 0x80;
  for (let i = len + 1; i < total - 4; i++) buf[i] = 0;
  const bits = len * 8;
  buf[total - 4] = bits >>> 24; buf[total - 3] = bits >>> 16; buf[total - 2] = bits >>> 8; buf[total - 1] = bits;
  H[0] = 0x6a09e667; H[1] = 0xbb67ae85; H[2] = 0x3c6ef372; H[3] = 0xa54ff53a;
  H[4] = 0x510e527f; H[5] = 0x9b05688c; H[6] = 0x1f83d9ab; H[7] = 0x5be0cd19;
  for (let off = 0; off < total; off += 64) {
    for (let i = 0; i < 16; i++) {
      const j = off + i * 4;
      W[i] = (buf[j] << 24) | (buf[j + 1] << 16) | (buf[j + 2] << 8) | buf[j + 3];
    }
    for (let i = 16; i < 64; i++) {
      const w15 = W[i - 15], w2 = W[i - 2];
      const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
      const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[i] + W[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
  }
}

function leadingZeroBits() {
  let n = 0;
  for (let i = 0; i < 8; i++) {
    if (H[i] === 0) { n += 32; continue; }
    return n + Math.clz32(H[i]);
  }
  return n;
}

function solve(seed, difficulty) {
  const prefix = new TextEncoder().encode(seed + ':');
  const buf = new Uint8Array(prefix.length + 21 + 72);
  buf.set(prefix);
  const base = prefix.length;
  let last = performance.now();
  // The answer counts up in decimal, written into buf in place.
  const digits = [0];
  for (let tried = 1; ; tried++) {
    let len = base;
    for (let i = digits.length - 1; i >= 0; i--) buf[len++] = 48 + digits[i];
    sha256(buf, len);
    if (leadingZeroBits() >= difficulty) {
      let answer = '';
      for (let i = digits.length - 1; i >= 0; i--) answer += digits[i];
      postMessage({ answer, tried });
      return;
    }
    // increment the little-endian digit array
    let i = 0;
    while (i < digits.length && digits[i] === 9) digits[i++] = 0;
    if (i === digits.length) digits.push(1); else digits[i]++;
    if ((tried & 1023) === 0) {
      const now = performance.now();
      if (now - last >= 100) { last = now; postMessage({ tried }); }
    }
  }
}

self.onmessage = (ev) => {
  const { seed, difficulty } = ev.data;
  solve(String(seed), Number(difficulty) || 0);
};
