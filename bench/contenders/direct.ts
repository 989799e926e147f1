/** The origin itself, no hop: the reference every figure is divided by. */
import type { Contender } from './contender.ts';

export const direct: Contender = {
  name: 'direct',
  description: 'the origin nginx, no hop',
  tools: [],
  role: 'reference',
  start({ origin }) {
    return Promise.resolve({
      url: origin.url,
      headers: {},
      h2: { url: `http://127.0.0.1:${origin.h2Port}` },
      pids: [],
      stop: () => Promise.resolve(),
    });
  },
};
