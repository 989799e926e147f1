import { pino, type Logger } from 'pino';

export type { Logger };

/** Libraries are silent unless the caller hands them a logger (only cli/ decides where logs go). */
export const silentLogger: Logger = pino({ level: 'silent' });
