// progress.js: how far along a proof of work looks.
//
// Finding the answer is luck: each hash succeeds with chance 2^-difficulty,
// so about 2^difficulty hashes are needed on average and often more. The
// bar shows the chance that a puzzle like this one is solved after `tried`
// hashes, 1 - e^(-tried/expected): it slows down instead of sitting at
// 100 %, and it stays below `steps` (the end) until the answer is found.
export function powProgress(tried, expected, steps) {
  const chance = 1 - Math.exp(-Math.max(0, tried) / expected);
  return Math.min(Math.floor(chance * steps), steps - 1);
}
