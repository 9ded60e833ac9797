import { useState } from 'preact/hooks';
import { api, qs, ago, ApiError } from '../api.js';
import { Badge, ErrorBox, Pager, useCursor, useLoad } from '../ui.jsx';

const LIMIT = 50;

function slot(s) {
  if (!s) return <span class="muted">—</span>;
  return (
    <span title={`${s.name} release ${s.release} in slot ${s.slot}`}>
      {s.version} <span class="muted">({s.slot})</span>
    </span>
  );
}

// Devices, one page at a time through the API's cursor paging (never the whole registry);
// filters are the API's own (region, type, label, online); the search box looks one id up.
export function Fleet() {
  const [form, setForm] = useState({ id: '', region: '', type: '', label: '', online: '' });
  const [filter, setFilter] = useState(form);
  const paging = useCursor();
  const { data, error, loading } = useLoad(async () => {
    if (filter.id) {
      try {
        return { devices: [await api(`/devices/${encodeURIComponent(filter.id)}`)], next: null };
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return { devices: [], next: null };
        throw e;
      }
    }
    const { id: _, ...q } = filter;
    return api(`/devices${qs({ ...q, cursor: paging.cursor, limit: LIMIT })}`);
  }, [filter, paging.cursor]);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const apply = (e) => {
    e.preventDefault();
    paging.reset();
    setFilter({ ...form });
  };
  const devices = data?.devices || [];
  return (
    <section>
      <h2>Fleet</h2>
      <form class="filters" onSubmit={apply}>
        <input placeholder="Device id" value={form.id} onInput={set('id')} name="id" />
        <input placeholder="Region" value={form.region} onInput={set('region')} name="region" />
        <input placeholder="Type" value={form.type} onInput={set('type')} name="type" />
        <input placeholder="label key=value" value={form.label} onInput={set('label')} name="label" />
        <select value={form.online} onChange={set('online')} name="online">
          <option value="">online or not</option>
          <option value="true">online</option>
          <option value="false">offline</option>
        </select>
        <button type="submit" class="primary">
          Filter
        </button>
      </form>
      <ErrorBox error={error} />
      <table class="grid" id="devices">
        <thead>
          <tr>
            <th>Device</th>
            <th>Type</th>
            <th>Region</th>
            <th>Labels</th>
            <th>Installed</th>
            <th>Standby</th>
            <th>Health</th>
            <th>Online</th>
            <th>Last seen</th>
          </tr>
        </thead>
        <tbody>
          {devices.map((d) => (
            <tr key={d.id} data-device={d.id}>
              <td class="mono">
                {d.id}
                {d.maintenance ? <Badge value="maintenance" /> : null}
                {d.quarantined ? <Badge value="quarantined" /> : null}
              </td>
              <td>{d.type}</td>
              <td>{d.region}</td>
              <td>
                {Object.entries(d.labels || {}).map(([k, v]) => (
                  <span class="tag">
                    {k}={v}
                  </span>
                ))}
              </td>
              <td>{slot(d.installed)}</td>
              <td>{slot(d.standby)}</td>
              <td>
                {d.health ? (
                  <span title={`error rate ${d.health.error_rate}, p95 ${d.health.p95_ms} ms, ${d.health.memory_mb} MB, ${d.health.restarts} restarts`}>
                    <Badge value={d.health.status} />
                  </span>
                ) : (
                  <span class="muted">no report</span>
                )}
              </td>
              <td>{d.online ? <Badge value="online" /> : <Badge value="offline" />}</td>
              <td title={d.last_seen || ''}>{ago(d.last_seen)}</td>
            </tr>
          ))}
          {!loading && devices.length === 0 ? (
            <tr>
              <td colspan="9" class="muted">
                No devices match.
              </td>
            </tr>
          ) : null}
        </tbody>
      </table>
      <Pager paging={paging} next={data?.next} count={devices.length} />
    </section>
  );
}
