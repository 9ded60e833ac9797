import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { ErrorBox, useLoad } from '../ui.jsx';

const FIELDS = [
  ['canary_percentage', 'number', 'Canary share (%)'],
  ['canary_delay', 'text', 'Canary soak'],
  ['batch_size', 'number', 'Batch size'],
  ['batch_delay', 'text', 'Batch delay'],
  ['failure_threshold', 'number', 'Failure threshold (%)'],
  ['timeout', 'text', 'Timeout'],
  ['switch_delay', 'text', 'Switch delay'],
  ['quorum', 'number', 'Quorum (%)'],
  ['offline_grace', 'text', 'Offline grace'],
  ['max_parallel', 'number', 'Max parallel (0: no cap)'],
  ['auto_rollback', 'checkbox', 'Roll back automatically'],
  ['health_check', 'checkbox', 'Health checks'],
  ['require_approval', 'checkbox', 'Require approval after the canary'],
];

function parseLabels(s) {
  const labels = {};
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const i = part.indexOf('=');
    if (i <= 0) throw new Error(`label ${JSON.stringify(part)} is not key=value`);
    labels[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return labels;
}

// The create form starts from the server's own defaults for the chosen strategy
// (GET /strategies: the reference documents' values) and sends only what differs.
export function NewDeployment() {
  const flows = useLoad(() => api('/flows?state=published'), []);
  const strategies = useLoad(() => api('/strategies'), []);
  const [flowId, setFlowId] = useState('');
  const [strategy, setStrategy] = useState('canary-waves');
  const [target, setTarget] = useState({ labels: '', type: '', region: '', devices: '' });
  const [config, setConfig] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const defaults = strategies.data?.strategies?.find((s) => s.name === strategy)?.config;
  useEffect(() => {
    if (defaults) setConfig(JSON.parse(JSON.stringify(defaults)));
  }, [defaults]);
  useEffect(() => {
    const list = flows.data?.flows || [];
    // Functional: the operator may have picked one already, before this effect ran.
    if (list.length) setFlowId((cur) => cur || list[0].id);
  }, [flows.data]);

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const body = { flow_id: flowId, strategy, config: {} };
      for (const [k] of FIELDS) if (JSON.stringify(config[k]) !== JSON.stringify(defaults[k])) body.config[k] = config[k];
      if (strategy === 'canary-waves' && JSON.stringify(config.waves) !== JSON.stringify(defaults.waves)) body.config.waves = config.waves;
      const ids = target.devices.split(/[\s,]+/).filter(Boolean);
      if (ids.length) body.target_devices = ids;
      else {
        const sel = { labels: parseLabels(target.labels) };
        if (target.type.trim()) sel.device_type = target.type.trim();
        if (target.region.trim()) sel.region = target.region.trim();
        body.selector = sel;
      }
      const d = await api('/deployments', { method: 'POST', body });
      location.hash = `#/deployments/${d.id}`;
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const setC = (k, type) => (e) =>
    setConfig({ ...config, [k]: type === 'checkbox' ? e.target.checked : type === 'number' ? Number(e.target.value) : e.target.value });
  const setW = (i, k, type) => (e) => {
    const waves = config.waves.map((w, j) => (j === i ? { ...w, [k]: type === 'number' ? Number(e.target.value) : e.target.value } : w));
    setConfig({ ...config, waves });
  };
  const setT = (k) => (e) => setTarget({ ...target, [k]: e.target.value });
  return (
    <section>
      <h2>New deployment</h2>
      <ErrorBox error={flows.error || strategies.error} />
      <form class="card form" onSubmit={submit} id="deployment-form">
        <fieldset>
          <legend>What</legend>
          <label>
            Flow (published)
            <select name="flow" value={flowId} onChange={(e) => setFlowId(e.target.value)}>
              {(flows.data?.flows || []).map((f) => (
                <option value={f.id}>
                  {f.name} v{f.version} ({f.id})
                </option>
              ))}
            </select>
          </label>
          <label>
            Strategy
            <select name="strategy" value={strategy} onChange={(e) => setStrategy(e.target.value)}>
              {(strategies.data?.strategies || []).map((s) => (
                <option value={s.name}>{s.name}</option>
              ))}
            </select>
          </label>
        </fieldset>
        <fieldset>
          <legend>Targets (a selector, or device ids)</legend>
          <label>
            Labels <input name="labels" placeholder="site=north, tier=edge" value={target.labels} onInput={setT('labels')} />
          </label>
          <label>
            Type <input name="type" value={target.type} onInput={setT('type')} />
          </label>
          <label>
            Region <input name="region" value={target.region} onInput={setT('region')} />
          </label>
          <label>
            Device ids <input name="devices" placeholder="overrides the selector" value={target.devices} onInput={setT('devices')} />
          </label>
        </fieldset>
        {config ? (
          <fieldset>
            <legend>Settings (defaults for {strategy})</legend>
            <div class="cfg">
              {FIELDS.map(([k, type, label]) => (
                <label class={type === 'checkbox' ? 'check' : ''}>
                  {type === 'checkbox' ? (
                    <input type="checkbox" name={k} checked={!!config[k]} onChange={setC(k, type)} />
                  ) : null}
                  {label}
                  {type !== 'checkbox' ? <input name={k} type={type} step="any" value={config[k]} onInput={setC(k, type)} /> : null}
                </label>
              ))}
            </div>
            {strategy === 'canary-waves' ? (
              <table class="grid small" id="waves">
                <thead>
                  <tr>
                    <th>Wave</th>
                    <th>Share (%)</th>
                    <th>Soak</th>
                    <th>Failure threshold (%)</th>
                  </tr>
                </thead>
                <tbody>
                  {config.waves.map((w, i) => (
                    <tr>
                      <td>
                        <input value={w.name} onInput={setW(i, 'name')} />
                      </td>
                      <td>
                        <input type="number" step="any" name={`wave${i}_percentage`} value={w.percentage} onInput={setW(i, 'percentage', 'number')} />
                      </td>
                      <td>
                        <input name={`wave${i}_soak`} value={w.soak} onInput={setW(i, 'soak')} />
                      </td>
                      <td>
                        <input type="number" step="any" value={w.failure_threshold} onInput={setW(i, 'failure_threshold', 'number')} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : null}
          </fieldset>
        ) : null}
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy || !flowId || !config} id="create">
          {busy ? 'Creating…' : 'Create deployment'}
        </button>
      </form>
    </section>
  );
}
