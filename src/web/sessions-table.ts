/**
 * The live table of every session on the gateway (GET /sessions, polled): state, ring fill,
 * listeners, frames sent, late frames, underruns and drops. Rows are kept by id and updated in
 * place, so the table does not flicker; a click on a row listens to that session.
 */
import type { SessionSummary } from '../shared/gateway-api.js';
import { fmtCount, setText } from './ui.js';

interface Row {
  tr: HTMLTableRowElement;
  id: HTMLTableCellElement;
  state: HTMLSpanElement;
  fill: HTMLDivElement;
  ringText: HTMLSpanElement;
  listeners: HTMLTableCellElement;
  sent: HTMLTableCellElement;
  late: HTMLTableCellElement;
  underruns: HTMLTableCellElement;
  drops: HTMLTableCellElement;
}

export class SessionsTable {
  private readonly rows = new Map<string, Row>();

  constructor(
    private readonly tbody: HTMLTableSectionElement,
    private readonly empty: HTMLElement,
    private readonly onSelect: (id: string) => void,
  ) {}

  update(sessions: readonly SessionSummary[], current: string | undefined): void {
    const sorted = [...sessions].sort((a, b) => (a.id === current ? -1 : b.id === current ? 1 : a.id.localeCompare(b.id)));
    const seen = new Set<string>();
    sorted.forEach((s, index) => {
      seen.add(s.id);
      const row = this.rows.get(s.id) ?? this.create(s.id);
      this.fill(row, s, s.id === current);
      if (this.tbody.children[index] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[index] ?? null);
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = sessions.length > 0;
  }

  private create(id: string): Row {
    const tr = document.createElement('tr');
    tr.dataset.session = id;
    tr.tabIndex = 0;
    tr.title = `Listen to ${id}`;
    const td = (cls?: string) => {
      const c = document.createElement('td');
      if (cls) c.className = cls;
      tr.append(c);
      return c;
    };
    const idCell = td('id');
    idCell.textContent = id;
    const state = document.createElement('span');
    state.className = 'badge';
    td().append(state);
    const ring = document.createElement('div');
    ring.className = 'ring';
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('div');
    fill.className = 'fill';
    bar.append(fill);
    const ringText = document.createElement('span');
    ring.append(bar, ringText);
    td().append(ring);
    const row: Row = {
      tr,
      id: idCell,
      state,
      fill,
      ringText,
      listeners: td('n'),
      sent: td('n'),
      late: td('n'),
      underruns: td('n'),
      drops: td('n'),
    };
    tr.addEventListener('click', () => this.onSelect(id));
    tr.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        this.onSelect(id);
      }
    });
    this.rows.set(id, row);
    return row;
  }

  private fill(row: Row, s: SessionSummary, current: boolean): void {
    row.tr.setAttribute('aria-current', String(current));
    row.state.dataset.state = s.state;
    setText(row.state, s.state);
    row.state.title = s.reason ?? '';
    const cap = Math.max(1, s.ringCapacityFrames);
    row.fill.style.width = `${Math.min(100, (100 * s.ringFrames) / cap).toFixed(1)}%`;
    setText(row.ringText, `${s.ringFrames}/${s.ringCapacityFrames}`);
    row.id.title = s.url ? `${s.id} · ${s.url} (${s.format})` : s.id;
    count(row.listeners, s.listeners, false, s.rtpSinks > 0 ? ` +${s.rtpSinks} rtp` : '');
    count(row.sent, s.sent, false);
    count(row.late, s.late, true);
    count(row.underruns, s.underruns, true);
    count(row.drops, s.dropped + s.skipped, true);
    row.drops.title = `${s.dropped} dropped on ring overflow, ${s.skipped} skipped for slow listeners`;
  }
}

function count(cell: HTMLTableCellElement, n: number, alert: boolean, suffix = ''): void {
  setText(cell, fmtCount(n) + suffix);
  cell.classList.toggle('zero', n === 0);
  cell.classList.toggle('alert', alert && n > 0);
}
