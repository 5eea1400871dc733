// pow.js: runs the proof of work of a challenge in the Web Worker of
// pow-worker.js, off the page's thread.

// runPoW resolves with {answer, tried} (answer: the decimal string to send)
// once the worker has found it. onProgress(tried) is called about every
// 100 ms. When signal aborts, the worker is stopped at once and the promise
// rejects with an AbortError. Difficulty 0 needs no work: '0' is an answer.
export function runPoW({ seed, difficulty }, { signal, onProgress } = {}) {
  const d = Number(difficulty) || 0;
  if (d <= 0) return Promise.resolve({ answer: '0', tried: 0 });
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) { reject(new DOMException('aborted', 'AbortError')); return; }
    const worker = new Worker(new URL('./pow-worker.js', import.meta.url));
    const onAbort = () => { worker.terminate(); reject(new DOMException('aborted', 'AbortError')); };
    const done = () => { worker.terminate(); if (signal) signal.removeEventListener('abort', onAbort); };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    worker.onmessage = (ev) => {
      const { tried, answer } = ev.data;
      if (answer !== undefined) { done(); resolve({ answer, tried }); return; }
      if (onProgress) onProgress(tried);
    };
    worker.onerror = (ev) => { done(); reject(new Error(`puzzle worker failed: ${ev.message}`)); };
    worker.postMessage({ seed: String(seed), difficulty: d });
  });
}
