// messages.js: one clear sentence for every error code of docs/API.md.

export const MESSAGES = {
  invalid: 'Something in the request is not valid. Check what you entered and try again.',
  challenge_failed: 'That answer was not accepted (wrong, expired or already used). Here is a new challenge.',
  unauthenticated: 'Please log in first (or log in again: your session has ended).',
  bad_credentials: 'Wrong username or password.',
  bad_path: 'Your purchase link has expired or was already used. Please try again.',
  not_found: 'This page does not exist.',
  unknown_item: 'This item does not exist.',
  method_not_allowed: 'The shop did not accept this kind of request.',
  username_taken: 'That username is already taken. Please choose another one.',
  already_bought: 'You already bought this item: one per customer.',
  not_drawn: 'This sale is a draw: only a drawn entry can buy, within its claim window.',
  not_live: 'The sale is not open right now: it has not started yet, or it is over.',
  not_admitted: 'This sale has a waiting room: join the queue and wait for your turn.',
  sold_out: 'Sold out: every unit has been sold.',
  not_eligible: 'Your account cannot take part in this sale: it is too new, or accounts from its network already hold the units allowed. If you signed in long ago, sign in again.',
  too_large: 'The request is too large.',
  rate_limited: 'Too many requests.',
  overloaded: 'The shop is very busy right now.',
  backend_unavailable: 'The shop is temporarily unavailable.',
  dependency_unavailable: 'The shop is temporarily unavailable.',
  cross_origin: 'This request came from another site and was refused. Open the shop directly and try again.',
  unsupported_media_type: 'The shop did not accept the format of this request.',
  internal: 'Something went wrong on our side. Please try again.',
  network: 'Cannot reach the shop. Check your connection and try again.',
};

// messageFor returns the human message of an ApiError (or any error).
export function messageFor(err) {
  if (!err) return '';
  const m = MESSAGES[err.code];
  if (m) {
    // The server's detail says which field is wrong: worth showing.
    if (err.code === 'invalid' && err.detail) return `${m} (${err.detail})`;
    return m;
  }
  if (err.status >= 500) return MESSAGES.internal;
  return `Unexpected error${err.status ? ` (${err.status})` : ''}: ${err.message || err}`;
}

// waitMessage is shown while the page waits Retry-After seconds.
export function waitMessage(err, secs) {
  const lead = {
    rate_limited: 'Too many requests',
    overloaded: 'The shop is very busy',
    backend_unavailable: 'The shop is temporarily unavailable',
    dependency_unavailable: 'The shop is temporarily unavailable',
  }[err.code] || 'The shop asked us to wait';
  return `${lead} — retrying in ${secs} s`;
}
